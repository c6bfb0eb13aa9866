"""Chinese fault messages: what is wrong with which value, by rule.

A message names the field (its Chinese label), quotes the clerk's value and
states the rule it breaks; how to fix it is the ``hint`` of the result code
(:class:`schemas.result_codes.ResultCode`), which the reports print beside
it.  Messages are built for a whole column of faults at once (string
concatenation over Series), never row by row.

Templates are keyed by ``(code, field, detail)``: ``detail`` tells apart the
ways one check can fail (empty, a mismatch with the ID number, each ID number
problem …).  ``{value}`` is the value as normalised, ``{extra}`` a detail such
as the expected check character; a missing key falls back to
``(code, field, "")``, then to a generic text built from the code's
description.
"""

from __future__ import annotations

import re

import pandas as pd

from pipeline.model import FIELD_LABELS
from schemas.result_codes import ResultCode, describe
from schemas.rules import FIELD_TABLES
from schemas.tables import code_table

_ERRORS: dict[tuple[ResultCode, str, str], str] = {
    (ResultCode.NAME_EMPTY, "xm", ""): "姓名为空",
    (ResultCode.PARAMETER_ERROR, "xm", ""): (
        "姓名“{value}”不正确：只能由汉字、英文字母、空格和间隔号·组成，最多{extra}个字"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "EMPTY"): "身份证号码为空",
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "SCIENTIFIC"): (
        "身份证号码“{value}”被 Excel 当作数字保存（科学计数法），后几位数字已经丢失，无法还原："
        "请把该列设置为文本格式后重新录入"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "SHAPE"): (
        "身份证号码“{value}”应为18位：前17位是数字，最后一位是数字或X"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "DIVISION"): (
        "身份证号码“{value}”的前6位{extra}不是（也从来不是）行政区划代码"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "BIRTH_DATE"): (
        "身份证号码“{value}”中的出生日期{extra}不是有效日期"
    ),
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "FUTURE"): "身份证号码“{value}”中的出生日期{extra}晚于今天",
    (ResultCode.INVALID_ID_NUMBER, "sfzhm", "CHECK"): (
        "身份证号码“{value}”的校验位（第18位）不正确：按前17位计算应为{extra}"
    ),
    (ResultCode.ALREADY_ENROLLED, "sfzhm", ""): (
        "身份证号码“{value}”在本批数据中已出现过：同一居民只能申领一次，重复的行不会发送"
    ),
    (ResultCode.ALREADY_ENROLLED, "sfzhm", "first"): (
        "身份证号码“{value}”在本批数据中已出现过（首次在{extra}）：同一居民只能申领一次，重复的行不会发送"
    ),
    (ResultCode.INVALID_GENDER, "xb", ""): (
        "性别“{value}”不是 GB/T 2261.1 的性别（男、女，或代码 0、1、2、9）"
    ),
    (ResultCode.INVALID_GENDER, "xb", "empty"): "性别为空",
    (ResultCode.INVALID_GENDER, "xb", "mismatch"): (
        "性别“{value}”与身份证号码第17位的奇偶不一致：按身份证号码应为{extra}"
    ),
    (ResultCode.INVALID_ETHNICITY, "mzdm", ""): "民族“{value}”不是 GB 3304 的民族名称或代码（01–56）",
    (ResultCode.INVALID_ETHNICITY, "mzdm", "empty"): "民族为空",
    (ResultCode.INVALID_BIRTH_DATE, "csrq", ""): "出生日期“{value}”不是有效日期",
    (ResultCode.INVALID_BIRTH_DATE, "csrq", "empty"): "出生日期为空",
    (ResultCode.INVALID_BIRTH_DATE, "csrq", "future"): "出生日期“{value}”晚于今天",
    (ResultCode.INVALID_BIRTH_DATE, "csrq", "mismatch"): (
        "出生日期“{value}”与身份证号码中的出生日期{extra}不一致"
    ),
    (ResultCode.INVALID_DOCUMENT_TYPE, "zjlx", ""): "证件类型“{value}”不是 CV02.01.101 的证件类型",
    (ResultCode.PARAMETER_ERROR, "zjhm", ""): "证件号码“{value}”过长：最多{extra}个字符",
    (ResultCode.PARAMETER_ERROR, "zjhm", "empty"): "证件号码为空",
    (ResultCode.PARAMETER_ERROR, "zjhm", "mismatch"): (
        "证件类型为居民身份证时，证件号码“{value}”应与身份证号码{extra}相同"
    ),
    (ResultCode.INVALID_MARITAL_STATUS, "fyzhdm", ""): (
        "婚姻状况“{value}”不是 GB/T 2261.2 的婚姻状况名称或代码"
    ),
    (ResultCode.INVALID_EDUCATION, "xldm", ""): "文化程度“{value}”不是 GB/T 4658 的学历名称或代码",
    (ResultCode.INVALID_OCCUPATION, "zydm", ""): "职业“{value}”不是 GB/T 6565 的职业大类代码（0–9、X、Y）",
    (ResultCode.INVALID_ADDRESS_TYPE, "dzlb", ""): "地址类别“{value}”应为 1（户籍地址）或 2（现居住地址）",
    (ResultCode.INVALID_ADDRESS_TYPE, "dzlb", "empty"): "地址类别为空",
    (ResultCode.INVALID_PAYMENT_METHOD, "ylfyzffs", ""): (
        "医疗费用支付方式“{value}”不是 CV07.10.003 的支付方式名称或代码"
    ),
    (ResultCode.INVALID_PAYMENT_METHOD, "ylfyzffs", "empty"): "医疗费用支付方式为空",
    (ResultCode.INVALID_ISSUE_DATE, "fksj", ""): (
        "发卡时间“{value}”不是有效日期（应为 YYYYMMDD，且不晚于今天）"
    ),
    (ResultCode.INVALID_BANK_CARD, "yhkh", ""): "银行卡号“{value}”应为12–19位数字",
    (ResultCode.PARAMETER_ERROR, "brdh", ""): "联系电话“{value}”不是有效的手机号码（11位）或带区号的固定电话",
    (ResultCode.PARAMETER_ERROR, "brdh", "empty"): "联系电话为空",
    (ResultCode.PARAMETER_ERROR, "klx", "empty"): (
        "卡类别为空：请在配置文件 [defaults] 中填写 klx，或在表中填写"
    ),
    (ResultCode.PARAMETER_ERROR, "isRealName", ""): "是否实名“{value}”应为 1（已实名认证）或 0（未认证）",
    (ResultCode.PARAMETER_ERROR, "isRealName", "empty"): "是否实名为空：应为 1（已实名认证）或 0（未认证）",
    (ResultCode.PARAMETER_ERROR, "*", ""): "{label}“{value}”过长：最多{extra}个字符",
}

_WARNINGS: dict[str, str] = {
    "fold": "{label}“{value}”是细分代码，已按大类“{extra}”处理，请核对",
    "upgrade": "15位身份证号码“{value}”已按国家标准升级为18位“{extra}”",
}

_PLACEHOLDER = re.compile(r"\{(label|value|extra)\}")


def label(field: str) -> str:
    """The Chinese label of a field code (the code itself when it has none)."""
    return FIELD_LABELS.get(field, field)


def _render(template: str, field: str, values: pd.Series, extras: pd.Series | None) -> pd.Series:
    """``template`` filled in for every row: pieces concatenated column-wise."""
    result = pd.Series("", index=values.index, dtype="str")
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        result = result + template[position : match.start()]
        name = match.group(1)
        if name == "label":
            result = result + label(field)
        elif name == "value":
            result = result + values.astype("str")
        else:
            result = result + (extras.astype("str") if extras is not None else "")
        position = match.end()
    return result + template[position:]


def error_template(code: int, field: str, detail: str = "") -> str:
    """The template for one way a check fails, falling back to the check's plain form."""
    for key in ((code, field, detail), (code, field, ""), (code, "*", detail), (code, "*", "")):
        if key in _ERRORS:
            return _ERRORS[key]
    return "{label}“{value}”不正确：" + describe(code)


def error_messages(
    code: int,
    field: str,
    values: pd.Series,
    details: pd.Series | None = None,
    extras: pd.Series | None = None,
) -> pd.Series:
    """Messages for the faults ``code`` on ``field`` with the given values (same index).

    ``details`` (optional, per row) selects the template variant; ``extras``
    fills ``{extra}``.  An empty value with no ``empty`` template says the
    field is empty.
    """
    if details is None:
        details = pd.Series("", index=values.index, dtype="str")
    details = details.where((values != "") | (details != ""), "empty")
    result = pd.Series("", index=values.index, dtype="str")
    for detail in details.unique():
        chosen = (details == detail).to_numpy()
        template = error_template(code, field, str(detail))
        if detail == "empty" and (code, field, "empty") not in _ERRORS:
            template = "{label}为空" if "{value}" in template else template
        part_extras = extras[chosen] if extras is not None else None
        result[chosen] = _render(template, field, values[chosen], part_extras)
    return result


def warning_messages(kind: str, field: str, values: pd.Series, extras: pd.Series) -> pd.Series:
    """Messages for a normalisation warning of ``kind`` (``fold``, ``upgrade``) on ``field``."""
    if kind == "fold":
        names = code_table(FIELD_TABLES[field]).names
        extras = extras + " " + extras.map(names).fillna("").astype("str")  # few distinct codes
    return _render(_WARNINGS[kind], field, values, extras)
