"""Beside the layers, ``utils.handin``: from executed notebooks to the zip the course grades.

``team`` (team.toml), ``display`` (what notebooks show: team, tables, source code),
``execute`` (papermill), ``pdf`` (nbconvert + xelatex), ``latex`` (escaping and number format),
``report`` (the LaTeX report and its page limits), ``submission`` (build and check the zip).
May import ``utils.core`` only. ``python -m utils.handin {notebooks,pdf}``.
"""
