"""A private Secret Service for tests: its own D-Bus session bus and gnome-keyring-daemon.

Nothing here touches the user's session or keyring: the bus listens in a fresh directory, has no
service directories (so nothing is auto-activated behind our back), and gnome-keyring keeps its
files under a private HOME / XDG_DATA_HOME. Both processes are ours, stopped by PID at the end.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

SECRETS_BUS_NAME = "org.freedesktop.secrets"
PACKAGES = ("gnome-keyring", "dbus")
INSTALL_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 20.0

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={listen_dir}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class Unavailable(Exception):
    """The private Secret Service cannot run here; the message is the reason to skip."""


@dataclass(frozen=True)
class SecretServiceSession:
    address: str
    root: Path
    password: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to use this Secret Service (and only this one)."""
        return {
            "DBUS_SESSION_BUS_ADDRESS": self.address,
            "HOME": str(self.root / "home"),
            "XDG_DATA_HOME": str(self.data_dir),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "XDG_RUNTIME_DIR": str(self.root / "run"),
        }


def _missing_tools() -> list[str]:
    return [tool for tool in ("gnome-keyring-daemon", "dbus-daemon") if shutil.which(tool) is None]


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *args],
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )


@functools.cache
def ensure_tools() -> str | None:
    """None when gnome-keyring-daemon and dbus-daemon are there (installing them once, as root,
    when apt-get can); otherwise why not."""
    missing = _missing_tools()
    if not missing:
        return None
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return (
            f"{', '.join(missing)} not installed (Debian: apt-get install -y {' '.join(PACKAGES)})"
        )
    try:
        done = _apt_get("install", "-y", "-qq", *PACKAGES)
        if done.returncode != 0:  # stale or empty package lists: refresh them, then once more
            _apt_get("update", "-qq")
            done = _apt_get("install", "-y", "-qq", *PACKAGES)
    except subprocess.TimeoutExpired:
        return f"apt-get install {' '.join(PACKAGES)} did not finish in {INSTALL_TIMEOUT_S:g} s"
    missing = _missing_tools()
    if done.returncode != 0 or missing:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"apt-get install {' '.join(PACKAGES)} failed (exit {done.returncode}): {tail[0]}"
    return None


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_bus(root: Path, stack: ExitStack) -> str:
    listen_dir = root / "bus"
    listen_dir.mkdir()
    config = root / "bus.conf"
    config.write_text(BUS_CONFIG.format(listen_dir=listen_dir))
    bus = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    stack.callback(_stop, bus)
    assert bus.stdout is not None
    address = bus.stdout.readline().strip()  # printed once the bus accepts connections
    if not address:
        raise Unavailable(f"dbus-daemon exited (code {bus.wait()}) without a bus address")
    return address


def _start_keyring(session: SecretServiceSession, stack: ExitStack) -> None:
    from jeepney import DBusAddress, new_method_call  # type: ignore[import-untyped]
    from jeepney.bus_messages import MatchRule, message_bus  # type: ignore[import-untyped]
    from jeepney.io.blocking import open_dbus_connection  # type: ignore[import-untyped]

    conn = stack.enter_context(open_dbus_connection(bus=session.address))
    owner_changed = MatchRule(
        type="signal",
        sender=message_bus.bus_name,
        interface=message_bus.interface,
        member="NameOwnerChanged",
        path=message_bus.object_path,
    )
    owner_changed.add_arg_condition(0, SECRETS_BUS_NAME)
    with conn.filter(owner_changed) as queue:
        conn.send_and_get_reply(message_bus.AddMatch(owner_changed))
        daemon = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            env=dict(os.environ, **session.env),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(_stop, daemon)
        assert daemon.stdin is not None
        daemon.stdin.write(session.password.encode())  # --unlock reads the password to EOF
        daemon.stdin.close()
        try:
            conn.recv_until_filtered(queue, timeout=READY_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(
                f"gnome-keyring-daemon did not take {SECRETS_BUS_NAME} on the bus within "
                f"{READY_TIMEOUT_S:g} s (exit code {daemon.poll()})"
            ) from None
    # The default collection ("login") must exist and be unlocked, or every call would prompt.
    service = DBusAddress(
        "/org/freedesktop/secrets",
        bus_name=SECRETS_BUS_NAME,
        interface="org.freedesktop.Secret.Service",
    )
    reply = conn.send_and_get_reply(new_method_call(service, "ReadAlias", "s", ("default",)))
    if reply.body[0] == "/":
        raise Unavailable("gnome-keyring-daemon started without a default collection")


@contextmanager
def private_secret_service(password: str = "codexd-test-pw") -> Iterator[SecretServiceSession]:
    """A running, unlocked Secret Service on a private bus; everything stops on exit."""
    reason = ensure_tools()
    if reason is not None:
        raise Unavailable(reason)
    try:
        import jeepney  # noqa: F401
    except ImportError:
        raise Unavailable("jeepney is not installed (pip install secretstorage)") from None
    # Short paths: unix socket names are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="codexd-ss-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        for sub in ("home", "data", "config", "run"):
            (root / sub).mkdir(mode=0o700)
        address = _start_bus(root, stack)
        session = SecretServiceSession(address=address, root=root, password=password)
        _start_keyring(session, stack)
        yield session
