"""The reports of a run: what the clerk and the machines read afterwards.

:mod:`~pipeline.reports.write` writes every file of a run;
:mod:`~pipeline.reports.data` computes, once, the columns every report shows;
:mod:`~pipeline.reports.workbooks` lays out results.xlsx and errors.xlsx,
:mod:`~pipeline.reports.results_csv` the machine-readable CSV,
:mod:`~pipeline.reports.annotate` the clerk's own workbook marked up, and
:mod:`~pipeline.reports.summary` the end-of-run text and counts.
:mod:`pipeline.reports.xlsx` is the fast xlsx writer they share.
"""
