"""`make lab`: JupyterLab listens on localhost only and keeps Jupyter's login token (the README's promise)."""

from __future__ import annotations

import shlex
import subprocess


def test_make_lab_binds_localhost_and_keeps_the_login_token(project):
    printed = subprocess.run(
        ["make", "-n", "-s", "lab", "STAMP=/dev/null"], cwd=project, capture_output=True, text=True, check=True
    ).stdout
    printed = printed.replace("\\\n", " ")  # make prints the recipe's continued lines as written
    command = next(line for line in printed.splitlines() if "jupyter lab" in line)
    words = shlex.split(command)
    assert "--ip=127.0.0.1" in words, command
    assert not any(word.startswith(("--ip=0", "--ip=*", "--ServerApp.ip=")) for word in words), command
    # no option that empties or disables the token or password
    assert not any("token=" in word or "password=" in word or "disable_check_xsrf" in word for word in words), command
    assert "--no-browser" in words
