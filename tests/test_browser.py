"""Real-browser test of the trade-off explorer notebook: JupyterLab + headless Chromium (Playwright).

It starts a private JupyterLab server (isolated config, data, runtime, settings and workspace dirs under
tmp_path; autosave off so the notebook on disk is never rewritten), opens EXPLORER_NOTEBOOK in Debian's
Chromium, runs all cells through the Run menu, and then acts as a person would: it presses an arrow key on
the focused handle of the "loss factor" slider and checks that the kernel-side callback updated the readout
(still "<x> bpp ... <y> dB"), the reconstruction image and the JPEG and WebP labels (each with its file's bpp
and dB, for UL's new rate). A screenshot is saved to
tests/artifacts/explorer.png (and tmp_path); on failure, tests/artifacts/explorer-failure.png.

The widget contract the notebook honours:
  * a slider (SelectionSlider / FloatSlider) whose description is exactly "loss factor";
  * an ipywidgets.HTML readout with CSS class `ul-readout` whose text has "<number> bpp" and "<number> dB";
  * an ipywidgets.Image (PNG) with CSS class `ul-reconstruction`;
  * one ipywidgets.HTML label per codec with CSS class `ul-codec-label` (JPEG, WebP), each with "<number> bpp"
    and "<number> dB", the codec's name and UL's rate it was fitted to;
  the callback that updates the last three observes the slider's value in the kernel.

Needs Chromium (/usr/bin/chromium) and the `playwright` package: `.ci/browser_setup.sh` installs both.
Without them the test is skipped, unless UL_REQUIRE_BROWSER=1, where it fails.

Environment:
  UL_EXPLORER_NOTEBOOK    notebook to test instead of EXPLORER_NOTEBOOK: repo-relative or absolute (a
                          notebook outside the repo is served from its own folder)
  UL_REQUIRE_BROWSER=1    fail instead of skipping when Chromium or Playwright is missing
  UL_CHROMIUM             Chromium binary (default /usr/bin/chromium)
  UL_BROWSER_RUN_TIMEOUT  seconds for "run all" until the explorer renders (default 75)
"""
import hashlib
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPLORER_NOTEBOOK = "nbs/tutorials/trade_off.ipynb"
VIDEO_NOTEBOOK = "nbs/27_video_explorer.ipynb"  # its last widget: the clip scrubber of the shipped video demo
ARTIFACTS = REPO / "tests" / "artifacts"

CHROMIUM = os.environ.get("UL_CHROMIUM", "/usr/bin/chromium")
# The machine has no network: loopback only, nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-dev-shm-usage",
]
SERVER_START_TIMEOUT = 60     # s until /api/status answers
PAGE_TIMEOUT = 45             # s until the notebook and its kernel are ready
RUN_TIMEOUT = float(os.environ.get("UL_BROWSER_RUN_TIMEOUT", "75"))  # s for run-all -> widgets
UPDATE_TIMEOUT = 30           # s for slider move -> readout and image update
SLIDER_LABEL = "loss factor"
CODEC_NAMES = ("JPEG", "WebP")  # the codec labels, in order
BPP_RE = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?\s*bpp", re.I)
DB_RE = re.compile(r"[-+]?\d+(?:\.\d+)?\s*dB")


# ---------------------------------------------------------------------------------------------- helpers
def _missing_browser():
    "Why the browser test cannot run here, or None."
    why = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        why.append(f"Chromium not found at {CHROMIUM}")
    for mod in ("playwright", "jupyterlab", "ipywidgets", "ipykernel"):
        if importlib.util.find_spec(mod) is None:  # found, not imported: importing ipywidgets takes seconds
            why.append(f"the `{mod}` Python package is not installed")
    return "; ".join(why) or None


def _notebook(notebook=None):
    "(server root dir, notebook path relative to it, absolute notebook path)"
    nb = Path(notebook or os.environ.get("UL_EXPLORER_NOTEBOOK") or EXPLORER_NOTEBOOK)
    path = (nb if nb.is_absolute() else REPO / nb).resolve()
    try:
        rel = path.relative_to(REPO)
        root = REPO
    except ValueError:
        root, rel = path.parent, Path(path.name)
    return root, rel, path


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(url, method="GET", timeout=5):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with _NO_PROXY.open(req, timeout=timeout) as r:
        return r.status, r.read()


def _tail(path, n=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _wait(cond, timeout, what, diag=lambda: "", interval=0.25):
    "Poll cond() until truthy (returned) or fail after timeout seconds. cond may raise to fail early."
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{diag()}", pytrace=False)
        time.sleep(interval)


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _kill_leftover_kernels(runtime_dir):
    "Kernels run in their own session; end any still running whose command line names our runtime dir."
    mine = str(runtime_dir)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if mine in cmd and "kernel" in cmd:
            try:
                os.kill(int(d.name), signal.SIGKILL)
            except OSError:
                pass


def _lab_settings(settings_dir):
    "User settings for the private JupyterLab: no autosave, no news/update toasts, no kernel dialog."
    settings = {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        # "none": every cell is in the DOM, so outputs of cells below the fold render too
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
    }
    for name, value in settings.items():
        f = settings_dir / f"{name.rsplit('/', 1)[0]}/{name.rsplit('/', 1)[1]}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def browser_ready():
    why = _missing_browser()
    if why:
        if os.environ.get("UL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"UL_REQUIRE_BROWSER=1 but {why}: run `.ci/browser_setup.sh` (as root) first",
                        pytrace=False)
        pytest.skip(f"browser test needs Chromium + Playwright ({why}); install with .ci/browser_setup.sh")


@pytest.fixture
def notebook():
    "The notebook the browser opens (a test parametrizes `notebook` to open another one)."
    return None  # EXPLORER_NOTEBOOK, or UL_EXPLORER_NOTEBOOK


@pytest.fixture
def jupyter_lab(tmp_path, browser_ready, notebook):
    "A private JupyterLab serving the notebook's root; always stopped (process group) afterwards."
    root, rel, path = _notebook(notebook)
    if not path.is_file():
        pytest.fail(f"explorer notebook not found: {path} (EXPLORER_NOTEBOOK / UL_EXPLORER_NOTEBOOK)",
                    pytrace=False)
    jdir = tmp_path / "jupyter"
    dirs = {k: jdir / k for k in ("config", "data", "runtime", "ipython", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir(parents=True)
    _lab_settings(dirs["settings"])
    env = dict(os.environ)
    for k in ("JUPYTER_CONFIG_PATH", "JUPYTER_PATH", "JUPYTER_TOKEN", "JUPYTER_PORT"):
        env.pop(k, None)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]), IPYTHONDIR=str(dirs["ipython"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]), JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]),
        NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
    )
    env.setdefault("MPLBACKEND", "Agg")
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.user_settings_dir={dirs['settings']}", f"--LabApp.workspaces_dir={dirs['workspaces']}",
    ]
    if os.geteuid() == 0:  # CI and the dev machines run as root
        cmd.append("--allow-root")
    log_path = tmp_path / "jupyter.log"
    log = open(log_path, "wb")
    sha_before = _sha(path)
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)  # own process group
    base = f"http://127.0.0.1:{port}"
    try:
        def up():
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{_tail(log_path)}", pytrace=False)
            try:
                return _http(f"{base}/api/status?token={token}", timeout=2)[0] == 200
            except OSError:
                return False
        _wait(up, SERVER_START_TIMEOUT, "JupyterLab's /api/status", lambda: _tail(log_path), interval=0.3)
        yield dict(base=base, token=token, rel=rel.as_posix(), path=path, log=log_path, tmp=tmp_path)
    finally:
        if proc.poll() is None:
            try:  # graceful: the server shuts its kernels down
                _http(f"{base}/api/shutdown?token={token}", method="POST", timeout=3)
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        _kill_leftover_kernels(dirs["runtime"])
        log.close()
    # after teardown of the server, on success only (a failing test already reports its own error)
    assert _sha(path) == sha_before, f"the browser test rewrote {path}: autosave should be off"


# ---------------------------------------------------------------------------------------------- the test
def test_explorer_slider_updates_readout_and_image(jupyter_lab, tmp_path):
    from playwright.sync_api import sync_playwright, Error as PWError

    lab = jupyter_lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = [tmp_path / "explorer.png", ARTIFACTS / "explorer.png"]
    fail_shots = [tmp_path / "explorer-failure.png", ARTIFACTS / "explorer-failure.png"]
    for f in shots + fail_shots:
        f.unlink(missing_ok=True)
    console = []
    t0 = time.monotonic()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                     timeout=60_000)
        page = None
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            # loopback only: anything else is refused at once rather than timing out
            ctx.route(re.compile(r"^(?!(https?|wss?)://127\.0\.0\.1[:/]|blob:|data:)"), lambda r: r.abort())
            page = ctx.new_page()
            page.set_default_timeout(15_000)
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

            def diag():
                return ("browser console errors:\n  " + "\n  ".join(console[-15:]) + "\n"
                        + "notebook errors:\n" + (_notebook_errors(page) or "(none)") + "\n"
                        + "JupyterLab log tail:\n" + _tail(lab["log"], 25))

            url = (f"{lab['base']}/lab/tree/{urllib.parse.quote(lab['rel'])}"
                   f"?token={lab['token']}&reset")
            page.goto(url, wait_until="domcontentloaded", timeout=PAGE_TIMEOUT * 1000)
            _wait_notebook_ready(page, diag)
            ran = _run_all(page)

            slider = page.locator(".widget-slider, .jupyter-widget-slider, .widget-hslider").filter(
                has=page.locator(".widget-label", has_text=re.compile(rf"^\s*{SLIDER_LABEL}\s*$")))
            handle = slider.locator(".noUi-handle").first
            readout = page.locator(".ul-readout").first
            image = page.locator("img.ul-reconstruction, .ul-reconstruction img").first
            codecs = page.locator(".ul-codec-label")

            def codec_texts():
                return [codecs.nth(i).inner_text().strip() for i in range(codecs.count())]

            def rendered():
                _raise_on_notebook_error(page)
                if not (handle.count() and readout.count() and image.count()):
                    return False
                if not (handle.is_visible() and readout.is_visible() and image.is_visible()):
                    return False
                txt = readout.inner_text()
                return (BPP_RE.search(txt) and DB_RE.search(txt) and len(codec_texts()) == len(CODEC_NAMES)
                        and all(BPP_RE.search(t) and DB_RE.search(t) for t in codec_texts())
                        and image.evaluate("i => !!i.src && i.complete && i.naturalWidth > 0"))

            def found():
                parts = {f'"{SLIDER_LABEL}" slider handle': handle, ".ul-readout": readout,
                         ".ul-reconstruction image": image}
                seen = ", ".join(f"{k}: {'absent' if not v.count() else 'visible' if v.is_visible() else 'hidden'}"
                                 for k, v in parts.items())
                txt = readout.inner_text() if readout.count() else None
                return f"found: {seen}; readout text: {txt!r}; codec labels: {codec_texts()!r}\n" + diag()
            _wait(rendered, RUN_TIMEOUT,
                  f'the explorer ("{SLIDER_LABEL}" slider, .ul-readout with bpp/dB, .ul-reconstruction image, '
                  f'{len(CODEC_NAMES)} .ul-codec-label with bpp/dB)', found, interval=0.5)
            labels0 = codec_texts()
            assert [n for n in CODEC_NAMES if any(t.startswith(n) for t in labels0)] == list(CODEC_NAMES), labels0
            assert slider.count() == 1, f'expected one "{SLIDER_LABEL}" slider, found {slider.count()}'
            readout.scroll_into_view_if_needed()
            text0, src0 = readout.inner_text().strip(), image.get_attribute("src")
            png0 = _image_digest(image)

            # --- a person moves the slider: focus its handle, press an arrow key
            how = _move_slider(page, handle)

            def updated():
                t = readout.inner_text().strip()
                labels = codec_texts()
                return (t != text0 and image.get_attribute("src") != src0 and t
                        and all(a != b for a, b in zip(labels, labels0)))
            _wait(updated, UPDATE_TIMEOUT, "the readout and the image to change after moving the slider "
                  f"({how}); readout was {text0!r}", diag, interval=0.25)
            _wait(lambda: image.evaluate("i => i.complete && i.naturalWidth > 0"), 10, "the new image to load",
                  diag)
            text1, src1 = readout.inner_text().strip(), image.get_attribute("src")
            assert text1 != text0
            assert BPP_RE.search(text1) and DB_RE.search(text1), f"readout lost its bpp/dB numbers: {text1!r}"
            assert src1 and src1 != src0
            assert _image_digest(image) != png0, "the image's src changed but it shows the same picture"
            # the codecs were fitted to UL's new rate: the rate the readout shows is the one the labels name
            labels1, bpp1 = codec_texts(), BPP_RE.search(text1).group(0).split()[0]
            for label in labels1:
                assert BPP_RE.search(label) and DB_RE.search(label), f"a codec label lost its bpp/dB: {label!r}"
                assert f"UL's {float(bpp1):.3f} bpp" in label, f"codec label {label!r} is not for UL's {bpp1} bpp"

            # JupyterLab scrolls inside the notebook panel: bring the whole explorer to the top of the view
            slider.evaluate("e => (e.closest('.jp-OutputArea-output') || e).scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            for s in shots:
                page.screenshot(path=str(s), full_page=True)
            print(f"\nexplorer: {text0!r} -> {text1!r}; codecs {labels0!r} -> {labels1!r} by {how}; ran via {ran}; "
                  f"{time.monotonic() - t0:.1f} s in the browser; screenshot {shots[-1]}")
        except BaseException:
            if page is not None:
                for s in fail_shots:
                    try:
                        page.screenshot(path=str(s), full_page=True, timeout=10_000)
                    except PWError:
                        pass
            raise
        finally:
            browser.close()


@pytest.mark.parametrize("notebook", [VIDEO_NOTEBOOK])
def test_video_scrubber_steps_through_the_frames(jupyter_lab, tmp_path):
    """The clip scrubber of the shipped video demo: the "frame" slider moved by a key press changes every row's
    picture and the readout, which says whether the frame was given or generated."""
    from playwright.sync_api import sync_playwright

    lab = jupyter_lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "video_scrubber.png"
    shot.unlink(missing_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            ctx.route(re.compile(r"^(?!(https?|wss?)://127\.0\.0\.1[:/]|blob:|data:)"), lambda r: r.abort())
            page = ctx.new_page()
            page.set_default_timeout(15_000)
            diag = lambda: "notebook errors:\n" + (_notebook_errors(page) or "(none)") + "\nJupyterLab log:\n" + \
                _tail(lab["log"], 25)
            page.goto(f"{lab['base']}/lab/tree/{urllib.parse.quote(lab['rel'])}?token={lab['token']}&reset",
                      wait_until="domcontentloaded", timeout=PAGE_TIMEOUT * 1000)
            _wait_notebook_ready(page, diag)
            _run_all(page)
            slider = page.locator(".widget-slider, .jupyter-widget-slider, .widget-hslider").filter(
                has=page.locator(".widget-label", has_text=re.compile(r"^\s*frame\s*$")))
            handle = slider.locator(".noUi-handle").first
            readout = page.locator(".ul-frame-readout").first
            pictures = page.locator("img.ul-frame, .ul-frame img")

            def rendered():
                _raise_on_notebook_error(page)
                return (handle.count() and readout.count() and pictures.count() == 4
                        and "frame 1 of 16" in readout.inner_text()
                        and all(pictures.nth(i).evaluate("i => i.complete && i.naturalWidth > 0") for i in range(4)))
            _wait(rendered, RUN_TIMEOUT, "the scrubber (a 'frame' slider, .ul-frame-readout, four .ul-frame images)",
                  diag, interval=0.5)
            assert "given" in readout.inner_text()
            sources = [pictures.nth(i).get_attribute("src") for i in range(4)]
            digests = [_image_digest(pictures.nth(i)) for i in range(4)]
            handle.scroll_into_view_if_needed()
            handle.focus()
            for _ in range(5):  # a person presses the right arrow five times: frame 6, after the 4 given ones
                handle.press("ArrowRight")
            _wait(lambda: "frame 6 of 16" in readout.inner_text(), UPDATE_TIMEOUT, "the readout to say frame 6",
                  diag)
            assert "generated" in readout.inner_text()
            _wait(lambda: all(pictures.nth(i).get_attribute("src") != sources[i] for i in range(4)), UPDATE_TIMEOUT,
                  "every row's picture to change", diag)
            _wait(lambda: all(pictures.nth(i).evaluate("i => i.complete && i.naturalWidth > 0") for i in range(4)),
                  10, "the new pictures to load", diag)
            assert all(_image_digest(pictures.nth(i)) != digests[i] for i in range(3)), "a row shows the same frame"
            slider.evaluate("e => (e.closest('.jp-OutputArea-output') || e).scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------- page steps
def _notebook_errors(page):
    "Error outputs (output_type 'error') of the open notebook's cells, read from its model: '' if none."
    try:
        errs = page.evaluate("""() => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const cells = w && w.content && w.content.model ? w.content.model.cells : [];
            const out = [];
            for (let i = 0; i < cells.length; i++) {
                const c = cells.get(i);
                if (!c.outputs) continue;
                for (const o of c.outputs.toJSON())
                    if (o.output_type === 'error')
                        out.push((o.traceback || []).join('\\n') || `${o.ename}: ${o.evalue}`);
            }
            return out; }""")
    except Exception:  # noqa: BLE001 - diagnostics only (page gone, app not exposed)
        return ""
    return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", t)[-3000:] for t in errs)


def _raise_on_notebook_error(page):
    errs = _notebook_errors(page)
    if errs:
        pytest.fail(f"a notebook cell raised:\n{errs}", pytrace=False)


def _dismiss_popups(page):
    "Kernel-selection dialog -> accept (default kernel); any other dialog fails; toasts -> close."
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and dialog.first.is_visible():
        text = dialog.first.inner_text()
        if re.search(r"Select Kernel", text, re.I):
            dialog.first.locator(".jp-Dialog-button.jp-mod-accept").first.click()
        else:
            pytest.fail(f"unexpected JupyterLab dialog:\n{text}", pytrace=False)
    for close in page.locator(".Toastify__toast .jp-toast-button, .Toastify__close-button").all():
        try:
            if close.is_visible():
                close.click(timeout=2000)
        except Exception:  # noqa: BLE001 - a toast may vanish under us
            pass


def _kernel_status(page):
    return page.evaluate("""() => {
        const app = window.jupyterapp; const w = app && app.shell.currentWidget;
        const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
        return k ? k.status : null; }""")


def _wait_notebook_ready(page, diag):
    def ready():
        _dismiss_popups(page)
        if not page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").count():
            return False
        return _kernel_status(page) == "idle"
    _wait(ready, PAGE_TIMEOUT, "the notebook to open with an idle kernel", diag, interval=0.5)


def _run_all(page):
    "Run > Run All Cells, as a person would; the command itself if the menu is not there."
    page.locator(".jp-NotebookPanel .jp-Notebook").first.click(position={"x": 5, "y": 5})
    try:
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click(timeout=5000)
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).first.click(timeout=5000)
    except Exception:  # noqa: BLE001
        page.keyboard.press("Escape")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        how = "command notebook:run-all-cells (the Run menu was not found)"
    else:
        how = "Run > Run All Cells"
    _dismiss_popups(page)
    return how


def _image_digest(image):
    "SHA-256 of the bytes the <img> shows (its blob:/data: URL fetched in the page)."
    return image.evaluate("""async i => {
        const buf = await (await fetch(i.src)).arrayBuffer();
        const h = await crypto.subtle.digest('SHA-256', buf);
        return Array.from(new Uint8Array(h)).map(b => b.toString(16).padStart(2, '0')).join(''); }""")


def _move_slider(page, handle):
    "Focus the slider handle and press an arrow key (away from the end it sits at); drag as a fallback."
    handle.scroll_into_view_if_needed()
    now, hi = handle.get_attribute("aria-valuenow"), handle.get_attribute("aria-valuemax")
    key = "ArrowLeft" if now is not None and hi is not None and float(now) >= float(hi) else "ArrowRight"
    handle.focus()
    handle.press(key)
    try:
        _wait(lambda: handle.get_attribute("aria-valuenow") != now, 3, "the handle to move")
        return f"{key} on the focused slider handle"
    except pytest.fail.Exception:
        pass
    box = handle.bounding_box()
    dx = -60 if key == "ArrowLeft" else 60
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    return f"mouse drag of the slider handle by {dx} px"
