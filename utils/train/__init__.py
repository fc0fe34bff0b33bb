"""Layer 4, ``utils.train``: one training loop and what feeds it.

``loop`` (the loop every model trains with, and its one early-stopping rule), ``features``
(frozen encoders run once, their features cached), ``classifier`` (steps 1 and 2: loaders,
training, checkpoint), ``clip`` (step 3: data, parameter groups, training).
May import ``utils.core``, ``utils.data``, ``utils.models`` and ``utils.eval``.
"""
