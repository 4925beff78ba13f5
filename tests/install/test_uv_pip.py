"""scripts/uv_pip.py: uv installs from the sources pip's configuration names (make install's installer).

The end-to-end test installs a package that exists only in a find-links folder named by a pip config file, with
no index allowed: it succeeds only if the configuration reached uv.
"""

import base64
import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".tools" / "uv" / "bin" / "uv"  # make deps installs it (the Makefile's $(UV))

spec = importlib.util.spec_from_file_location("uv_pip", ROOT / "scripts" / "uv_pip.py")
uv_pip = importlib.util.module_from_spec(spec)
spec.loader.exec_module(uv_pip)


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel holding module `name` with VERSION = version."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    with zipfile.ZipFile(path, "w") as whl:
        for arc, text in files.items():
            whl.writestr(arc, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={digest},{len(text.encode())}")
        whl.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
    return path


@pytest.fixture(autouse=True)
def no_pip_variables(monkeypatch):
    """Only the test's own pip configuration: the machine's PIP_* variables (certificate, timeouts) would win."""
    import os

    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)


def test_pip_settings_become_uv_flags_with_the_environment_winning(tmp_path, monkeypatch):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /a\nextra-index-url = file:///x/simple file:///y/simple\n"
                    "constraint = /c.txt\ncert = /ca.pem\ntimeout = 60\n[install]\ntrusted-host = mirror.local\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_FIND_LINKS", "/b")  # a PIP_* variable replaces the file's value, as in pip
    settings = uv_pip.pip_config()
    flags, env = uv_pip.uv_options(settings)
    pairs = list(zip(flags[::2], flags[1::2]))
    assert ("--find-links", "/b") in pairs and ("--find-links", "/a") not in pairs
    assert ("--extra-index-url", "file:///x/simple") in pairs and ("--extra-index-url", "file:///y/simple") in pairs
    assert ("--constraint", "/c.txt") in pairs and ("--allow-insecure-host", "mirror.local") in pairs
    assert env == {"SSL_CERT_FILE": "/ca.pem", "UV_HTTP_TIMEOUT": "60"}


def test_uv_installs_from_the_find_links_pip_is_configured_with(tmp_path, monkeypatch):
    assert UV.is_file(), f"{UV} is missing: `make deps` (or `make uv`) installs it"
    links = tmp_path / "links"
    links.mkdir()
    _wheel(links, "cptprobe", "1.0")
    _wheel(links, "cptprobe", "2.0")
    (tmp_path / "constraints.txt").write_text("cptprobe<2\n")
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nno-index = true\nfind-links = {links}\nconstraint = {tmp_path / 'constraints.txt'}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "uv_pip.py"), str(UV), str(venv), "install",
                           "cptprobe"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    version = subprocess.run([str(venv / "bin" / "python"), "-c", "import cptprobe; print(cptprobe.VERSION)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "1.0"  # found through the configured find-links, capped by the configured constraint
    # bytecode written at install, as pip does (under PYTHONDONTWRITEBYTECODE nothing else would write it)
    assert list(venv.glob("lib/python3*/site-packages/__pycache__/cptprobe.*.pyc"))


def test_a_bad_command_line_says_how_to_call_it(capsys):
    assert uv_pip.main(["uv", "venv"]) == 2
    assert "uv_pip.py UV VENV install|uninstall" in capsys.readouterr().err
