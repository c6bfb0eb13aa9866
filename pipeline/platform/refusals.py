"""What a refusal of the app's credentials tells the operator to check, said once.

``getWorkKey`` answers 10101, 10102, 10103 or 10105 when the platform does not
accept the app id, the package name, the secret or the sign.  The client
raises :class:`~pipeline.errors.AuthenticationRefused` with the line built
here, and ``ehc check-config`` shows that same line after the platform's
address.  The platform's own phrase for each code is the code's
``description`` (:class:`schemas.result_codes.ResultCode`); this table holds
only what the operator should do about it.
"""

from __future__ import annotations

from pipeline.logs import mask_app_id
from schemas.result_codes import ResultCode

#: What the platform refused and what the operator should check, by result code.
REFUSAL_ADVICE: dict[ResultCode, tuple[str, str]] = {
    ResultCode.INVALID_ORG_CODE: (
        "应用 ID",
        "请核对配置 [platform] app_id 或环境变量 EHC_APP_ID，应与平台分配的 APPID 完全一致",
    ),
    ResultCode.INVALID_USER_NAME: ("应用身份", "请核对配置 [platform] app_id 与 app_package_name"),
    ResultCode.INVALID_PASSWORD: ("应用密钥", "请核对环境变量 EHC_APP_SECRET 或配置 [platform] app_secret"),
    ResultCode.INVALID_WORK_KEY: (
        "签名",
        "通常是应用密钥不对：请核对环境变量 EHC_APP_SECRET 或配置 [platform] app_secret；"
        "也请确认本机时钟准确（签名含时间戳）",
    ),
}


def refusal_message(code: int, message: str, app_id: str) -> str:
    """The operator's one line for ``getWorkKey`` refused with ``code`` (``message``: the platform's text)."""
    if code == ResultCode.NETWORK_ERROR:  # the platform's own trouble, still there after every retry
        return f"平台暂时无法发放认证字符串（{code} {message}），重试后仍未恢复。请稍后再运行或向平台确认"
    if code not in REFUSAL_ADVICE:
        return f"平台拒绝发放认证字符串（{code} {message}）。请检查配置和本机时钟"
    refused, advice = REFUSAL_ADVICE[ResultCode(code)]
    if code == ResultCode.INVALID_ORG_CODE:
        refused += f" {mask_app_id(app_id)}"
    return f"平台拒绝了{refused}（{code} {ResultCode(code).description}）。{advice}"
