"""Who is logged in: argon2 password hashes, server-side sessions, CSRF tokens, login throttling.

* Passwords are hashed with argon2id (argon2-cffi's defaults); an unknown
  user name costs the same verification as a known one.
* A session is a random 256-bit token in an HttpOnly, SameSite=Lax cookie;
  the server keeps only its SHA-256, so a copy of the database logs nobody
  in.  A session ends when idle too long, when too old, at logout, when
  the user's password changes, and when the user is disabled.
* Every state-changing request carries the session's CSRF token (a form
  field or the ``X-CSRF-Token`` header), compared in constant time.  The
  login form, which has no session yet, uses a double-submit token: a
  random value in a SameSite=Strict cookie and the same in the form.
* Failed logins are counted per user name and per client address; past its
  limit, logins under that name or from that address pause until the
  oldest failure ages out.  The address's limit is far above the name's:
  the clerks of a centre often reach the server from one NAT address, and
  their typos must not pause the whole office, while guesses sprayed over
  many names from one address still stop.  Each attempt is counted before its password is
  checked (and taken back if it was right), so guesses sent all at once
  meet the same limit as guesses sent one after another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from pipeline.web.engine import WebSettings
from pipeline.web.store import Session, Store, User, epoch

SESSION_COOKIE = "ehc_session"
LOGIN_COOKIE = "ehc_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 200
#: A session is marked used at most this often (seconds): not a database write per page.
TOUCH_EVERY = 30.0

_hasher = PasswordHasher()


class LoginRefused(Exception):
    """A login that did not succeed; ``str()`` is the message for the page."""


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``."""
    return _hasher.hash(password)


@cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_hex(16))


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (a malformed hash never matches)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_problem(password: str, name: str) -> str:
    """Why ``password`` is not acceptable for user ``name`` ("" when it is)."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"密码至少 {MIN_PASSWORD_CHARS} 个字符"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"密码最多 {MAX_PASSWORD_CHARS} 个字符"
    if password.strip().casefold() == name.strip().casefold():
        return "密码不能与用户名相同"
    if len(set(password)) < 4:
        return "密码过于简单"
    return ""


def token_hash(token: str) -> str:
    """What the server keeps of a session token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(expected: str, given: str) -> bool:
    """Constant-time comparison of two tokens (an empty one never matches)."""
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())


@dataclass(frozen=True)
class Login:
    """A successful login: the user, the cookie token, the session's CSRF token."""

    user: User
    token: str
    csrf: str


class Auth:
    """Logins, sessions and throttling over the store, with the workspace's settings."""

    def __init__(self, store: Store, settings: WebSettings) -> None:
        self.store = store
        self.settings = settings

    @property
    def lockout_seconds(self) -> float:
        """How long failed logins count."""
        return self.settings.lockout_minutes * 60

    def _attempt(self, name: str, address: str, too_many: str) -> tuple[list[str], float]:
        """The throttle keys of a password attempt and its time, the attempt counted as a failure until
        its password proves right; :class:`LoginRefused` while throttled.

        ``too_many`` is the refusal, with ``{minutes}`` for the minutes to wait.
        """
        now = epoch()
        limits = {
            f"user:{name.strip().casefold()}": self.settings.login_attempts,
            f"address:{address}": self.settings.login_attempts_per_address,
        }
        latest = self.store.take_login_attempt(limits, now, now - self.lockout_seconds)
        if latest:
            wait = latest + self.lockout_seconds - now
            raise LoginRefused(too_many.format(minutes=max(1, int(wait // 60) + 1)))
        return list(limits), now

    def login(self, name: str, password: str, address: str) -> Login:
        """Check a name and password; raises :class:`LoginRefused` with the page's message."""
        keys, now = self._attempt(name, address, "登录失败次数过多，请 {minutes} 分钟后再试")
        user = self.store.user_by_name(name.strip()) if name.strip() else None
        if user is None:
            verify_password(_dummy_hash(), password)  # the same time as for a real user
            good = False
        else:
            good = verify_password(user.password_hash, password)
        if user is None or not good:
            raise LoginRefused("用户名或密码不正确")  # counted already, by _attempt
        self.store.forgive_login_attempt(keys, now)
        if user.disabled:  # said only to whoever knows the password
            raise LoginRefused("此用户已停用，不能登录。如需恢复，请联系管理员")
        self.store.clear_login_failures(keys[0])
        if _hasher.check_needs_rehash(user.password_hash):
            self.store.rehash_password(user.id, hash_password(password))
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.store.add_session(token_hash(token), user.id, csrf, now)
        return Login(user, token, csrf)

    def confirm_password(self, user: User, password: str, address: str) -> None:
        """Check a logged-in user's current password (changing it), counted as a login attempt.

        Without the count, the password page would let whoever holds a session
        (a PC left logged in) try passwords without the login page's limit.
        Raises :class:`LoginRefused` with the page's message.
        """
        keys, now = self._attempt(user.name, address, "密码输错次数过多，请 {minutes} 分钟后再试")
        if not verify_password(user.password_hash, password):
            raise LoginRefused("当前密码不正确")  # counted already, by _attempt
        self.store.forgive_login_attempt(keys, now)

    def session(self, token: str) -> tuple[User, Session] | None:
        """The user and session of a cookie token, if the session is still alive."""
        if not token:
            return None
        key = token_hash(token)
        session = self.store.session(key)
        if session is None:
            return None
        now = epoch()
        idle = now - session.seen > self.settings.session_idle_minutes * 60
        old = now - session.created > self.settings.session_hours * 3600
        user = self.store.user(session.user_id)
        if idle or old or user is None or user.disabled:
            self.store.end_session(key)
            return None
        if now - session.seen > TOUCH_EVERY:
            self.store.touch_session(key, now)
        return user, session

    def logout(self, token: str) -> None:
        """End the session of a cookie token."""
        if token:
            self.store.end_session(token_hash(token))

    def tidy(self) -> None:
        """Forget expired sessions and failures that no longer count."""
        now = epoch()
        self.store.end_stale_sessions(
            now - self.settings.session_idle_minutes * 60, now - self.settings.session_hours * 3600
        )
        self.store.clear_login_failures("", before=now - self.lockout_seconds)
