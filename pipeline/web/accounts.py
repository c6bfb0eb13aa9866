"""Centres and users: what ``ehc centres add``, ``ehc users …`` and the admin pages do.

Each operation checks its input and raises :class:`~pipeline.errors.ConfigError`
with a one-line Chinese message (the command line turns it into exit code
2, the admin page shows it), and writes a line to the audit log.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from pipeline.files import explain_sqlite_error
from pipeline.web.auth import hash_password, password_problem
from pipeline.web.engine import ConfigError
from pipeline.web.store import Centre, Store, User

#: An organisation code as the platform issues them: letters and digits.
ORG_CODE = re.compile(r"[0-9A-Za-z]{4,50}")
#: A user name: letters, digits, ``.``, ``_``, ``-``, or Chinese characters.
USER_NAME = re.compile(r"[0-9A-Za-z._\-\u4e00-\u9fff]{2,40}")
MAX_CENTRE_NAME = 100


def open_store(state_dir: Path) -> Store:
    """The workspace database of ``state_dir``, as a ConfigError when it cannot be opened."""
    try:
        return Store(state_dir)
    except (OSError, sqlite3.Error, RuntimeError) as error:
        reason = explain_sqlite_error(error) if not isinstance(error, RuntimeError) else str(error)
        raise ConfigError(f"无法打开工作台数据库（{reason}）。请检查状态目录 {state_dir} 的权限") from None


def add_centre(store: Store, org_code: str, name: str, *, by: User | None = None) -> Centre:
    """Add a centre with its organisation code and name."""
    org_code, name = org_code.strip(), " ".join(name.split())
    if not ORG_CODE.fullmatch(org_code):
        raise ConfigError(f"机构代码“{org_code}”不正确：应为 4–50 位字母或数字")
    if not name or len(name) > MAX_CENTRE_NAME:
        raise ConfigError(f"中心名称不能为空，最多 {MAX_CENTRE_NAME} 个字")
    try:
        centre = store.add_centre(org_code, name)
    except sqlite3.IntegrityError:
        raise ConfigError(f"机构代码 {org_code} 的中心已存在") from None
    store.audit("添加中心", user=by, user_name="命令行", target=org_code, detail=name)
    return centre


def add_user(
    store: Store, name: str, org_code: str, password: str, *, admin: bool = False, by: User | None = None
) -> User:
    """Add a user of the centre with ``org_code``."""
    name = name.strip()
    centre = new_user_centre(store, name, org_code)
    problem = password_problem(password, name)
    if problem:
        raise ConfigError(f"密码不符合要求：{problem}")
    try:
        user = store.add_user(name, centre.id, hash_password(password), is_admin=admin)
    except sqlite3.IntegrityError:
        raise ConfigError(f"用户名 {name} 已存在") from None
    store.audit(
        "添加用户", user=by, user_name="命令行", centre_id=centre.id, target=name,
        detail=f"中心 {centre.org_code}{'，管理员' if admin else ''}",
    )  # fmt: skip
    return user


def new_user_centre(store: Store, name: str, org_code: str) -> Centre:
    """The centre a new user ``name`` would belong to, or a ConfigError saying why they cannot be added.

    Checked before a password is asked for: nobody types one twice to learn the name is taken.
    """
    name = name.strip()
    if not USER_NAME.fullmatch(name):
        raise ConfigError(f"用户名“{name}”不正确：2–40 个字母、数字、汉字或 . _ -")
    centre = store.centre_by_code(org_code.strip())
    if centre is None:
        raise ConfigError(
            f"没有机构代码为 {org_code} 的中心。请先添加：ehc centres add {org_code} --name 名称"
        )
    if store.user_by_name(name) is not None:
        raise ConfigError(f"用户名 {name} 已存在")
    return centre


def existing_user(store: Store, name: str) -> User:
    """User ``name``, or a ConfigError saying there is none."""
    user = store.user_by_name(name.strip())
    if user is None:
        raise ConfigError(f"没有用户 {name}")
    return user


def set_password(store: Store, name: str, password: str, *, by: User | None = None) -> User:
    """Give user ``name`` a new password (every session of theirs ends)."""
    user = existing_user(store, name)
    problem = password_problem(password, user.name)
    if problem:
        raise ConfigError(f"密码不符合要求：{problem}")
    store.set_password(user.id, hash_password(password))
    store.audit("修改密码", user=by, user_name="命令行", centre_id=user.centre_id, target=user.name)
    return user


def set_disabled(store: Store, name: str, disabled: bool, *, by: User | None = None) -> User:
    """Stop user ``name`` logging in (their sessions end), or allow it again."""
    user = existing_user(store, name)
    if disabled and by is not None and by.id == user.id:
        raise ConfigError("不能停用自己的账号")
    store.set_disabled(user.id, disabled)
    action = "停用用户" if disabled else "启用用户"
    store.audit(action, user=by, user_name="命令行", centre_id=user.centre_id, target=user.name)
    return user
