"""A workbook's shared strings: a text that repeats down a column written once, its cells pointing at it.

Most columns of a report repeat a handful of texts on every row — the file,
the status, the codes of 民族 or 医保类型, the town — and an inline string
cell spells its text out each time with 35 bytes of tags around it
(``<c r="E2" t="inlineStr"><is><t>校验通过</t></is></c>``).  A cell of a shared
string holds only its number (``<c r="E2" t="s"><v>1</v></c>``): for a
200,000-row 明细 the sheet's XML is about 30 % shorter (83 of 281 MB), and
laying it out and deflating it take as much less.  This is how Excel itself
saves text.  Columns of mostly different values (names, ID numbers, phones)
stay inline: a table of them would be as long as the cells and held in memory.

The table is bounded (:data:`MOST_STRINGS`, :data:`MOST_BYTES`); past it,
cells are written inline as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.reports.xlsx.xml import EMPTY, contiguous_bytes, escaped, lit

#: The part xlsxwriter names for the table, and the part's opening.
PART = "xl/sharedStrings.xml"
_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="{count}" '
    'uniqueCount="{unique}">'
)

#: A column's part is shared when each of its texts is written this many times on average at least.
MIN_REPEATS = 8
#: Values looked at first: a column of mostly different values is told from them without encoding it all.
SAMPLE = 2048
#: Fewest cells of a part worth sharing (headers and notes stay inline).
MIN_CELLS = 64
#: Bounds of the table, held in memory until the workbook is written.
MOST_STRINGS = 500_000
MOST_BYTES = 32 << 20

_OPEN_ITEM, _CLOSE_ITEM = lit('<si><t xml:space="preserve">'), lit("</t></si>")

#: How many strings of the table are written at once.
_WRITE_STRINGS = 50_000


class SharedStrings:
    """The table of one workbook: each text's number, in the order first met.

    Number 0 is an empty text no cell refers to, so the table is never empty
    (a workbook whose cells are all inline still has a valid part).
    """

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {"": 0}
        self._bytes = 0
        self.count = 0  # cells referring to the table

    def numbers(self, text: pa.Array) -> pa.Array | None:
        """The number of each text of a column's part as text (``""`` where it is empty), or None
        when the part is better written inline (too few repeats, too short, or the table full).

        ``text`` is a large_string array without nulls, holding nothing XML needs escaped.
        """
        if len(text) < MIN_CELLS:
            return None
        sample = text.slice(0, SAMPLE)
        if pc.count_distinct(sample).as_py() * MIN_REPEATS > len(sample):
            return None
        encoded = pc.dictionary_encode(text)
        texts = encoded.dictionary.to_pylist()
        if len(texts) * MIN_REPEATS > len(text):
            return None
        new = [value for value in texts if value not in self._numbers]
        added = sum(len(value.encode()) for value in new)
        if len(self._numbers) + len(new) > MOST_STRINGS or self._bytes + added > MOST_BYTES:
            return None
        for value in new:
            self._numbers[value] = len(self._numbers)
        self._bytes += added
        labels = pa.array([str(self._numbers[value]) if value else "" for value in texts], pa.large_string())
        numbers = pc.take(labels, encoded.indices)
        self.count += len(text) - (pc.sum(pc.equal(numbers, "")).as_py() or 0)
        return numbers

    def xml(self) -> Iterator[bytes]:
        """The part's XML, a piece at a time."""
        yield _HEAD.format(count=self.count, unique=len(self._numbers)).encode()
        texts = list(self._numbers)  # in number order: a dict keeps the order keys were added in
        for start in range(0, len(texts), _WRITE_STRINGS):
            part = escaped(pa.array(texts[start : start + _WRITE_STRINGS], pa.large_string()))
            items = pc.binary_join_element_wise(_OPEN_ITEM, part, _CLOSE_ITEM, EMPTY)
            yield bytes(contiguous_bytes(items))
        yield b"</sst>"
