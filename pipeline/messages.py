"""Chinese fault messages: what is wrong with which value, by rule.

A message names the field (its Chinese label), quotes the clerk's value and
says what the field accepts (with examples; a standard's number only in
brackets after them); how to fix it is :func:`fault_fix`, per field where one
code covers several (10110: name, phone, document number …), which the
reports print beside it, and :func:`fault_title` names it in summaries.
Messages are built for a whole column of faults at once (string
concatenation over Series), never row by row.

Templates are keyed by ``(code, field, detail)``: ``detail`` tells apart the
ways one check can fail (empty, a mismatch with the ID number, each ID number
problem …).  ``{value}`` is the value as the clerk wrote it, ``{extra}`` a
detail such as the birth date in the ID number or the row a repeated ID
number first appears on; a missing key falls back to
``(code, field, "")``, then to a generic text built from the code's
description.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.model import FIELD_LABELS, QUOTED_CHARS
from pipeline.text.arrow import text_array, to_series
from schemas.result_codes import ResultCode, describe, field_hint, field_title
from schemas.rules import FIELD_TABLES, NUMBERS_KEPT_AS_TEXT
from schemas.tables import code_table

_ERRORS: dict[tuple[ResultCode, str, str], str] = {
    (ResultCode.NAME_EMPTY, "xm", ""): "姓名为空",
    (ResultCode.PARAMETER_ERROR, "xm", ""): (
        "姓名“{value}”含有不能用的字符：只能用汉字、英文字母、空格、间隔号（·）、点（.）、撇号（'）和连字符（-）"
    ),
    (ResultCode.PARAMETER_ERROR, "xm", "long"): "姓名“{value}”过长：最多{extra}个字",
    (ResultCode.PARAMETER_ERROR, "xm", "lost"): (
        "姓名“{value}”中有问号：多半是生僻字在 Excel 另存为普通 CSV 时丢失了："
        "请用原来的 Excel 文件，或另存为“CSV UTF-8”后再处理"
    ),
    (ResultCode.PARAMETER_ERROR, "xm", "noted"): (
        "姓名“{value}”带有括号里的说明：姓名只填居民的名字，说明（如 代办、儿童）请写到备注列"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "EMPTY"): "身份证号码为空",
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "SCIENTIFIC"): (
        "身份证号码“{value}”被 Excel 当作数字保存（科学计数法），后几位数字已经丢失，无法还原："
        "请把该列设置为文本格式后重新录入"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "MASKED"): (
        "身份证号码“{value}”中有 * 号，是隐去了部分数字的号码（别的系统导出时常这样做），无法办理："
        "请向居民或原登记处要完整的号码"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "SHAPE"): (
        "身份证号码“{value}”应为18位（现在是{extra}位）：前17位是数字，最后一位是数字或X"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "LETTERS"): (
        "身份证号码“{value}”中有字母 O、I 或 L：多半是数字 0 或 1 录成了字母，请对照身份证改正"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "DIVISION"): (
        "身份证号码“{value}”的前6位{extra}不是行政区划代码（地址码），号码可能录错：请对照身份证核对"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "BIRTH_DATE"): (
        "身份证号码“{value}”第7–14位{extra}不是有效的出生日期，号码可能录错：请对照身份证核对"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "FUTURE"): (
        "身份证号码“{value}”中的出生日期{extra}晚于今天，号码可能录错：请对照身份证核对"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "CHECK"): (
        "身份证号码“{value}”有误：最后一位（校验码）与前17位对不上，说明号码中有数字录错或顺序颠倒："
        "请对照身份证逐位核对，不要只改最后一位"
    ),
    (ResultCode.ALREADY_ENROLLED, "sfzhm", ""): (
        "身份证号码“{value}”与{extra}重复：同一居民只能申领一次，本行不会发送"
    ),
    (ResultCode.ALREADY_ENROLLED, "sfzhm", "unplaced"): (
        "身份证号码“{value}”在本批数据中已出现过：同一居民只能申领一次，本行不会发送"
    ),
    (ResultCode.INVALID_GENDER, "xb", ""): "性别“{value}”无法识别：应填 男 或 女（也可填代码 1、2）",
    (ResultCode.INVALID_GENDER, "xb", "empty"): "性别为空",
    (ResultCode.INVALID_GENDER, "xb", "mismatch"): (
        "性别“{value}”与身份证号码不一致：按身份证号码第17位应为{extra}"
    ),
    (ResultCode.INVALID_ETHNICITY, "mzdm", ""): (
        "民族“{value}”无法识别：应填民族名称，如 汉族、回族、壮族，或两位代码，如 01（GB/T 3304）"
    ),
    (ResultCode.INVALID_ETHNICITY, "mzdm", "empty"): "民族为空",
    (ResultCode.INVALID_BIRTH_DATE, "csrq", ""): (
        "出生日期“{value}”不是有效日期：应写成 1962-05-18 或 19620518"
    ),
    (ResultCode.INVALID_BIRTH_DATE, "csrq", "empty"): "出生日期为空",
    (ResultCode.INVALID_BIRTH_DATE, "csrq", "future"): "出生日期“{value}”晚于今天",
    (ResultCode.INVALID_BIRTH_DATE, "csrq", "mismatch"): (
        "出生日期“{value}”与身份证号码中的出生日期{extra}不一致"
    ),
    (ResultCode.INVALID_DOCUMENT_TYPE, "zjlx", ""): (
        "证件类型“{value}”无法识别：应填 居民身份证、居民户口簿、护照 等证件名称，或代码 01–07、99"
    ),
    (ResultCode.PARAMETER_ERROR, "zjhm", ""): "证件号码“{value}”过长：最多{extra}个字符",
    (ResultCode.PARAMETER_ERROR, "zjhm", "empty"): "证件号码为空",
    (ResultCode.PARAMETER_ERROR, "zjhm", "mismatch"): (
        "证件类型为居民身份证时，证件号码“{value}”应与身份证号码{extra}相同"
    ),
    (ResultCode.INVALID_MARITAL_STATUS, "fyzhdm", ""): (
        "婚姻状况“{value}”无法识别：应填 未婚、已婚、丧偶、离婚 或 其他（或代码 10、20、30、40、90）"
    ),
    (ResultCode.INVALID_EDUCATION, "xldm", ""): (
        "文化程度“{value}”无法识别：应填 研究生、大学本科、大专、中专、高中、初中、小学、文盲 等（或代码）"
    ),
    (ResultCode.INVALID_OCCUPATION, "zydm", ""): (
        "职业“{value}”无法识别：应填职业大类名称或代码，如 商业、服务业人员（4）、农民（5）、军人（X）、"
        "其他从业人员（Y）"
    ),
    (ResultCode.INVALID_ADDRESS_TYPE, "dzlb", ""): "地址类别“{value}”应为 1（户籍地址）或 2（现居住地址）",
    (ResultCode.INVALID_ADDRESS_TYPE, "dzlb", "empty"): "地址类别为空",
    (ResultCode.INVALID_PAYMENT_METHOD, "ylfyzffs", ""): (
        "医疗费用支付方式“{value}”无法识别：应填 职工医保、居民医保、新农合、全自费 等名称，或代码 01–07、99"
    ),
    (ResultCode.INVALID_PAYMENT_METHOD, "ylfyzffs", "empty"): "医疗费用支付方式为空",
    (ResultCode.INVALID_ISSUE_DATE, "fksj", ""): (
        "发卡时间“{value}”不是有效日期：应写成 20261129 或 2026-11-29，且不晚于今天"
    ),
    (ResultCode.INVALID_BANK_CARD, "yhkh", ""): "银行卡号“{value}”应为12–19位数字",
    (ResultCode.PARAMETER_ERROR, "brdh", ""): (
        "联系电话“{value}”不正确：应为11位手机号码（如 13912345678）或带区号的固定电话（如 0757-83001234）"
    ),
    (ResultCode.PARAMETER_ERROR, "brdh", "empty"): "联系电话为空",
    (ResultCode.PARAMETER_ERROR, "brdh", "masked"): (
        "联系电话“{value}”中有 * 号，是隐去了部分数字的号码：请填居民完整的电话号码"
    ),
    (ResultCode.PARAMETER_ERROR, "brdh", "digits"): (
        "联系电话“{value}”是{extra}位数字：手机号码应为11位，请对照核对是否多了或少了数字"
    ),
    (ResultCode.PARAMETER_ERROR, "brdh", "local"): (
        "联系电话“{value}”像是没有区号的固定电话：请在前面加上区号，如 0757-83001234，或填手机号码"
    ),
    (ResultCode.PARAMETER_ERROR, "brdh", "several"): (
        "联系电话“{value}”填了不止一个号码：只能填一个，填居民本人的11位手机号码或带区号的固定电话"
    ),
    (ResultCode.PARAMETER_ERROR, "klx", "empty"): (
        "卡类别为空：请在配置文件 [defaults] 中填写 klx，或在表中填写"
    ),
    (ResultCode.PARAMETER_ERROR, "isRealName", ""): "是否实名“{value}”应为 1（已实名认证）或 0（未认证）",
    (ResultCode.PARAMETER_ERROR, "isRealName", "empty"): "是否实名为空：应为 1（已实名认证）或 0（未认证）",
    (ResultCode.PARAMETER_ERROR, "*", ""): "{label}“{value}”过长：最多{extra}个字符",
    (ResultCode.PARAMETER_ERROR, "*", "FORMULA_ERROR"): (
        "{label}是“{value}”：这是公式没有算出结果时 Excel 显示的错误值（如 VLOOKUP 没有找到），"
        "不是填写的内容：请改正公式，或直接填写内容（没有就留空）"
    ),
    **{
        (ResultCode.PARAMETER_ERROR, field, "SCIENTIFIC"): (
            "{label}“{value}”被 Excel 当作数字保存（科学计数法），后几位数字已经丢失，无法还原："
            "请把该列设置为文本格式后重新录入"
        )
        for field in NUMBERS_KEPT_AS_TEXT
    },
}

_WARNINGS: dict[str, str] = {
    "fold": "{label}“{value}”是细分代码，已按大类“{extra}”处理，请核对",
    "upgrade": "15位身份证号码“{value}”已按国家标准升级为18位“{extra}”",
}

#: What a clerk does about a warning: nothing, but what it means for the row.  A warning of no field
#: is reading's: values in columns without a header, which are not read.
WARNING_FIXES: dict[str, str] = {
    "sfzhm": "无需处理：提交时使用升级后的18位号码；也可在表中改为身份证上的18位号码",
    "": "这些内容不会提交：需要的话，把它们移到有表头的列中（如 备注），或给那一列加上表头",
    "*": "无需处理，仅供核对：提交时使用大类代码",
}

#: What a row that failed to send (or whose outcome is unknown) says to do about it, by the command that
#: sent it: each caller passes its own to the sending (``resend``).  ``ehc submit`` (and the workspace's
#: 再次提交, which the page words so) sends such rows again when run again; the nightly inbox run has
#: moved the register to processed/ by then and takes it in again only as a duplicate.
RESEND_SAME_COMMAND = "再次运行同一命令会重新发送"
RESEND_FROM_INBOX = (
    "收件箱运行不会再发送此行（文件已移到收件目录的 processed/）：请用 ehc submit 提交该文件重新发送"
)
#: Said after either where the platform may have enrolled the resident already.
RESEND_SAFELY = "（平台若答复已办理，按已办理处理，不会重复申领）"


_PLACEHOLDER = re.compile(r"\{(label|value|extra)\}")


def warning_title(field: str) -> str:
    """The short title of a normalisation warning on ``field`` (what happened, not an error)."""
    if field == "sfzhm":
        return "15位身份证号码已升级为18位（提示）"
    if not field:
        return "表头以外的列有内容，没有读取（提示）"
    return f"{label(field)}细分代码已按大类处理（提示）"


def warning_fix(field: str) -> str:
    """What a clerk does about a warning on ``field``."""
    return WARNING_FIXES.get(field, WARNING_FIXES["*"])


def fault_title(code: int, field: str, *, warning: bool = False) -> str:
    """The short title of a fault for summaries: ``联系电话不正确`` for 10110 on the phone.

    A warning is titled by what happened; a code that covers several fields
    by the field; any other code by the platform's description.
    """
    return warning_title(field) if warning else field_title(code, field)


def fault_fix(code: int, field: str, *, warning: bool = False) -> str:
    """How a clerk fixes a fault: per field where the code covers several, else the code's hint."""
    return warning_fix(field) if warning else field_hint(code, field)


def label(field: str) -> str:
    """The Chinese label of a field code (the code itself when it has none)."""
    return FIELD_LABELS.get(field, field)


def _render(template: str, field: str, values: pd.Series, extras: pd.Series | None) -> pd.Series:
    """``template`` filled in for every row: pieces concatenated column-wise."""
    texts = _render_texts(
        template,
        field,
        values.to_numpy(dtype=object, na_value=""),
        extras.to_numpy(dtype=object, na_value="") if extras is not None else None,
    )
    return pd.Series(texts, index=values.index, dtype="str")


def _render_texts(template: str, field: str, values: np.ndarray, extras: np.ndarray | None) -> np.ndarray:
    """:func:`_render` over object arrays of text: numpy concatenates each piece for every row at once."""
    result: np.ndarray = np.full(len(values), "", dtype=object)
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        result = result + template[position : match.start()]
        name = match.group(1)
        if name == "label":
            result = result + label(field)
        elif name == "value":
            result = result + values
        elif extras is not None:
            result = result + extras
        position = match.end()
    return result + template[position:]


def error_template(code: int, field: str, detail: str = "") -> str:
    """The template for one way a check fails, falling back to the check's plain form."""
    for key in ((code, field, detail), (code, field, ""), (code, "*", detail), (code, "*", "")):
        if key in _ERRORS:
            return _ERRORS[key]
    return "{label}“{value}”不正确：" + describe(code)


#: Characters a quoted value would hide: control characters and DEL, shown by their code point.
_INVISIBLE = r"[\x00-\x1f\x7f]"


def _plainly_visible(texts: pa.Array) -> bool:
    """Whether every one of ``texts`` is quoted as it is: none too long, none with a control character."""
    return not (
        pc.any(pc.greater(pc.utf8_length(texts), QUOTED_CHARS)).as_py()
        or pc.any(pc.match_substring_regex(texts, _INVISIBLE)).as_py()
    )


def _visible(values: pd.Series) -> pd.Series:
    """``values`` as a message quotes them: each control character written out (``张三[U+007F]``),
    so the clerk sees what is wrong, and a long value cut after :data:`QUOTED_CHARS` characters
    with "…" (a whole 32,767-character cell quoted made a message longer than a cell holds).
    """
    # Most quoted values are short and printable: told in Arrow, they are returned as they are.
    if _plainly_visible(text_array(values)):
        return values
    text = values.astype("str")
    long = text.str.len().fillna(0).to_numpy() > QUOTED_CHARS
    if long.any():
        values = text = text.where(~long, text.str.slice(0, QUOTED_CHARS) + "…")
    found = text.str.contains(_INVISIBLE, regex=True, na=False)
    if not found.any():
        return values
    shown = text[found].str.replace(_INVISIBLE, lambda m: f"[U+{ord(m.group()):04X}]", regex=True)
    return text.where(~found, shown)


def error_texts(
    code: int,
    field: str,
    values: pa.Array,
    details: pd.Series | None = None,
    extras: pd.Series | None = None,
) -> np.ndarray:
    """Messages for the faults ``code`` on ``field`` with the given values (Arrow text), in their order.

    ``details`` (optional, per value) selects the template variant; ``extras``
    fills ``{extra}``.  An empty value with no ``empty`` template says the
    field is empty.  An object array: the checks make the messages of each
    code's faults a chunk at a time and keep them as one.
    """
    if _plainly_visible(values):
        written = values.to_numpy(zero_copy_only=False)
        written[pd.isna(written)] = ""
    else:
        written = _visible(to_series(values, pd.RangeIndex(len(values)))).to_numpy(dtype=object, na_value="")
    variants = (
        details.to_numpy(dtype=object, na_value="")
        if details is not None
        else np.full(len(written), "", dtype=object)
    )
    variants = np.where((written != "") | (variants != ""), variants, "empty")
    more = extras.to_numpy(dtype=object, na_value="") if extras is not None else None
    result = np.full(len(written), "", dtype=object)
    for detail in pd.unique(variants):
        chosen = variants == detail
        template = error_template(code, field, str(detail))
        if detail == "empty" and (code, field, "empty") not in _ERRORS:
            template = "{label}为空" if "{value}" in template else template
        part_extras = more[chosen] if more is not None else None
        result[chosen] = _render_texts(template, field, written[chosen], part_extras)
    return result


def warning_messages(kind: str, field: str, values: pd.Series, extras: pd.Series) -> pd.Series:
    """Messages for a normalisation warning of ``kind`` (``fold``, ``upgrade``) on ``field``."""
    if kind == "fold":
        names = code_table(FIELD_TABLES[field]).names
        extras = extras + " " + extras.map(names).fillna("").astype("str")  # few distinct codes
    return _render(_WARNINGS[kind], field, values, extras)
