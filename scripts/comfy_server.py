"""Start and stop the real ComfyUI server provisioned by scripts/provision.sh (a subprocess)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from comfy_client import ComfyClient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """`main.py --cpu` on a free loopback port; use as a context manager (stopped even on errors)."""

    def __init__(self, output_dir: str, log_path: str, port: int = 0, python: str = sys.executable):
        self.comfy_dir = os.environ["DNPG_COMFYUI"]
        self.model_paths = os.environ["DNPG_EXTRA_MODEL_PATHS"]
        self.output_dir = output_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.python = python
        self.process = None
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self) -> list:
        return [
            self.python,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--output-directory",
            self.output_dir,
            "--extra-model-paths-config",
            self.model_paths,
        ] + self.frontend_arguments()

    @staticmethod
    def frontend_arguments() -> list:
        """DNPG_FRONTEND_ROOT: serve another frontend build (e.g. a newer comfyui-frontend-package's
        `static` folder) instead of the one installed with ComfyUI."""
        root = os.environ.get("DNPG_FRONTEND_ROOT")
        return ["--front-end-root", root] if root else []

    def start(self, timeout: float = 180.0) -> ComfyClient:
        os.makedirs(self.output_dir, exist_ok=True)
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            self.command(), cwd=self.comfy_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited at start-up (code {self.process.returncode}); see {self.log_path}")
            try:
                urllib.request.urlopen(self.url + "/system_stats", timeout=2).read()
                return ComfyClient(self.url)
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> ComfyClient:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        with open(self.log_path) as handle:
            return handle.read()
