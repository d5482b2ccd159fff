#!/usr/bin/env python3
"""Runs the README's worked example as written, against a built binary.

    python3 tests/readme_walkthrough.py target/release/assay

Each ```sh block of "Worked example" runs in bash, in a fresh directory,
in order: the alert receiver and `serve` (its `cargo run --release --`
replaced by the binary given) in the background, the rest one after the
other, each with the variables the blocks before it set. What the README
says each step shows is checked: the delivery's answer, the incident and
its evidence field for field against the README's JSON, the alerts the
receiver prints, the resolution, and the dashboard after signing in with
the admin token. The example's ports (8080, 9000) are used when free; when
either is taken, two free ports stand in for them throughout. It stops by
itself, within a few minutes, and exits non-zero naming the first step
that did not do what the README says.
"""

import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "http://127.0.0.1:8080"  # moved by main() when the ports are taken
# Times and ids differ from run to run; everything else must match.
VARYING = {"deadline_at"}


def fail(message):
    print(f"readme_walkthrough: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def example():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start = readme.index("## Worked example")
    section = readme[start:readme.index("\n## ", start + 1)]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    return [text for kind, text in blocks if kind == "sh"], \
        [text for kind, text in blocks if kind == "json"]


def wait_for(what, check, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    fail(f"{what} within {timeout:.0f} s")


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_ports(count):
    """`count` distinct free ports: each socket is held until all are bound."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def assignments(block):
    """The block's lines that set a shell variable (for the blocks after)."""
    return "\n".join(
        line for line in block.splitlines()
        if re.match(r"^(export )?[A-Za-z_][A-Za-z0-9_]*=", line) and "$(" not in line)


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def get(path, headers=None):
    request = urllib.request.Request(BASE + path, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def main():
    if len(sys.argv) != 2:
        fail("usage: readme_walkthrough.py PATH_TO_ASSAY")
    binary = os.path.abspath(sys.argv[1])
    if not os.access(binary, os.X_OK):
        fail(f"{binary} is not an executable; build it with cargo build --release")
    shells, jsons = example()
    # The README's ports when they are free; else two free ones, put in
    # their place wherever the example names them.
    global BASE
    ports = {8080: 8080, 9000: 9000}
    if not all(port_free(port) for port in ports):
        ports = dict(zip(ports, free_ports(2)))
        print(f"readme_walkthrough: ports 8080 and 9000 are taken; using {ports[8080]} and {ports[9000]}")
        def moved(text):
            return re.sub(r"\b(8080|9000)\b", lambda m: str(ports[int(m.group(1))]), text)
        shells = [moved(block) for block in shells]
        jsons = [moved(block) for block in jsons]
    BASE = f"http://127.0.0.1:{ports[8080]}"
    if len(shells) < 6:
        fail(f"the worked example has {len(shells)} sh blocks, not the 6 this walk expects")
    receiver_block, serve_block, deliver_block, report_block, incidents_block, resolve_block = shells[:6]
    if "cargo run --release --" not in serve_block:
        fail("the serve block no longer runs `cargo run --release --`")
    serve_block = serve_block.replace("cargo run --release --", f"exec {binary}")

    # A CI job that is cancelled sends SIGTERM: the children go with us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix="assay-readme-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    if ports[8080] != 8080:
        env["ASSAY_BIND"] = f"127.0.0.1:{ports[8080]}"
    children = []
    try:
        # The children write in append mode and this script reads through
        # handles of its own, so that no read moves where they write.
        receiver_log = open(os.path.join(work, "receiver.log"), "a")
        children.append(subprocess.Popen(["bash", "-c", receiver_block], cwd=work, env=env,
                                         stdout=receiver_log, stderr=subprocess.STDOUT,
                                         start_new_session=True))
        serve_log = open(os.path.join(work, "serve.log"), "a")
        children.append(subprocess.Popen(["bash", "-c", serve_block], cwd=work, env=env,
                                         stdout=serve_log, stderr=subprocess.STDOUT,
                                         start_new_session=True))

        def ready():
            try:
                with urllib.request.urlopen(BASE + "/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for("assay serve to be ready", ready, timeout=60)
        wait_for("the receiver to listen", lambda: not port_free(ports[9000]), timeout=30)
        def said_by_serve():
            text = read(os.path.join(work, "serve.log"))
            return text if "nothing is missing" in text or "missing or doubtful" in text else None
        said = wait_for("serve to say what is configured", said_by_serve, timeout=10)
        if "nothing is missing" not in said:
            fail(f"serve did not say that nothing is missing:\n{said}")

        env_so_far = assignments(serve_block)

        def run(block, what):
            done = subprocess.run(["bash", "-ec", env_so_far + "\n" + block], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                fail(f"{what} exited {done.returncode}: {done.stderr}")
            return done.stdout

        answer = json.loads(run(deliver_block, "the delivery").strip().splitlines()[-1])
        if answer.get("duplicate") is not False or not answer.get("run_id") \
                or answer.get("event_id") != "evt_demo_1":
            fail(f"the delivery answered {answer}")
        again = json.loads(run(deliver_block, "the second delivery").strip().splitlines()[-1])
        if again.get("duplicate") is not True or again.get("run_id") != answer["run_id"]:
            fail(f"the same delivery again answered {again}, not a duplicate of {answer}")

        run(report_block, "the stage reports")
        env_so_far += "\n" + assignments(report_block)

        def incidents():
            listed = json.loads(run(incidents_block, "the incident list"))
            return listed["data"] or None
        incident = wait_for("the incident to open", incidents)[0]
        shown = json.loads(jsons[0])["data"][0]
        for key in ("kind", "title", "status"):
            if incident[key] != shown[key]:
                fail(f"the incident's {key} is {incident[key]!r}, the README shows {shown[key]!r}")
        for key, value in shown["evidence"].items():
            if key in VARYING:
                continue
            got = incident["evidence"].get(key)
            if key == "guidance":
                # The last step quotes a time.
                got, value = got[:-1], value[:-1]
            if got != value:
                fail(f"evidence `{key}` is {got!r}, the README shows {value!r}")

        def alert(kind):
            for line in read(os.path.join(work, "receiver.log")).splitlines():
                if line.startswith("{") and json.loads(line).get("type") == kind:
                    return json.loads(line)
            return None
        opened = wait_for("the receiver to print the opened alert", lambda: alert("incident.opened"))
        if opened["incidents"][0]["url"] != f"{BASE}/incidents/{incident['id']}":
            fail(f"the alert links to {opened['incidents'][0].get('url')}")

        run(resolve_block, "the report of the right plan")
        auth = {"Authorization": "Bearer demo-key-0123456789abcdef"}
        resolved = wait_for("the incident to resolve itself", lambda: (
            lambda i: i if i["status"] == "resolved" else None)(
                get(f"/v1/incidents/{incident['id']}", auth)))
        if "access now matches" not in (resolved.get("resolution") or ""):
            fail(f"the resolution says {resolved.get('resolution')!r}")
        wait_for("the receiver to print the resolved alert", lambda: alert("incident.resolved"))

        # The dashboard: sign in with the admin token, as the README ends.
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = urllib.parse.urlencode({"token": "demo-admin-0123456789abcdef", "next": "/"}).encode()
        with browser.open(BASE + "/signin", data=form, timeout=10) as page:
            if "Sign out admin" not in page.read().decode():
                fail("signing in with the admin token did not open the dashboard")
        with browser.open(BASE + f"/runs/default/{answer['run_id']}", timeout=10) as page:
            run_page = page.read().decode()
        for shown in ("cus_demo", "plan_mismatch", "access_now_matches"):
            if shown not in run_page:
                fail(f"the run's page does not show {shown}")
        with browser.open(BASE + f"/incidents/{incident['id']}", timeout=10) as page:
            incident_page = page.read().decode()
        if "cus_demo" not in incident_page or "resolved" not in incident_page:
            fail("the incident's page does not show the resolved incident of cus_demo")
        print("readme_walkthrough: the worked example does what the README says")
    finally:
        # Each child leads its own process group: the group goes, the
        # program bash started included.
        for child in children:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
