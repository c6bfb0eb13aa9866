"""Reading registers: a clerk's workbook or delimited text file into tables of text.

:mod:`~pipeline.reading.register` is the entry point and the edge where files
are touched; :mod:`~pipeline.reading.excel` and
:mod:`~pipeline.reading.delimited` read the two families of formats;
:mod:`~pipeline.reading.table` finds the header row and assembles the table;
:mod:`~pipeline.reading.headers` is the vocabulary of known column names that
tells a header row from a title or data row.
"""
