"""Case 1 at scale, measured: the question-2 designs side by side, the machine's limit, and the
N-machine model of question 3. The notebooks ``case1_designs`` and ``case1_machines`` call this.

Question 2: the same workload through six processing designs, in one run.

The designs (each processes ``items`` images at concurrency ``n`` and returns its images/s):

* ``a_threads_original`` - the original design: ``ThreadPool(n).imap_unordered``, the per-pixel
  Python magic number (holds the GIL), a new connection per request, ``send_stats`` in the main
  thread. On real images this is the patched script itself, run as its CLI (nothing of its insides
  is used here);
* ``b_threads_vectorised`` - the same skeleton with the vectorised magic number;
* ``c_asyncio`` - one event loop, ``httpx.AsyncClient`` (keep-alive, at most ``n`` requests in
  flight), the CPU stage in a thread pool via ``run_in_executor``, stats awaited per image;
* ``d_multiprocessing`` - the original design with processes instead of threads
  (``multiprocessing.Pool(n)``; the main process still sends the stats);
* ``e_redesigned`` - ``reference.case1.fixed``: the bounded thread pool with a session per thread,
  stats from the workers, results recorded durably (:mod:`reference.case1.fixed.journal`);
* ``f_distributed`` - the same pipeline on a Dask ``LocalCluster`` of two worker processes, each
  running partitions with ``n // 2`` workers.

Two workloads. :class:`Emulated` is the task's premise: rotate + resize 10 ms without the GIL (a
sleep: "infinitely many cores"), the magic number 10 ms of Python under the GIL (or the vectorised
NumPy sum of a 320 x 240 image), the classifier 30 ms and the stats 10 ms away (a real HTTP server in
another process). :class:`Real` decodes, rotates, resizes and encodes real 640 x 480 JPEGs.

Also here: the classification server as a separate process (:func:`classifier_process`), CPU time of
a process (:func:`process_cpu`), and the plots the review shows (:func:`plot_designs`,
:func:`plot_machines`), drawn from recorded results.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PATCHED = ROOT / "reference" / "case1" / "patched" / "process_images.py"
T_RR, T_MAGIC, T_REQ, T_STATS = 0.010, 0.010, 0.030, 0.010  # the task's premises, seconds
TIMEOUT = 30
DESIGNS = ("a_threads_original", "b_threads_vectorised", "c_asyncio", "d_multiprocessing", "e_redesigned",
           "f_distributed")
LABELS = {
    "a_threads_original": "(a) исходный дизайн: потоки, цикл на Python, send_stats в главном потоке",
    "b_threads_vectorised": "(b) те же потоки, магическое число на NumPy",
    "c_asyncio": "(c) asyncio + httpx, CPU-стадия в пуле потоков",
    "d_multiprocessing": "(d) исходный дизайн на процессах (multiprocessing.Pool)",
    "e_redesigned": "(e) переделанный конвейер (reference/case1/fixed)",
    "f_distributed": "(f) он же на Dask LocalCluster (2 процесса)",
}
MAX_PROCESSES = 16  # (d) beyond this the machine only pays for more processes


# --- the classification server in its own process ------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def classifier_process(latency_ms: float = 30, stats_latency_ms: float = 10) -> Iterator[subprocess.Popen]:
    """``workbench.classifier_server`` in a separate process on 127.0.0.1 (so it does not share the
    measured process's GIL); yields the process, whose ``url`` attribute is the base URL."""
    port = free_port()
    code = ("import sys, workbench.classifier_server as cs; cs._Server.request_queue_size = 1024; "
            "cs.main(sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", code, "--port", str(port), "--latency-ms", str(latency_ms),
                             "--stats-latency-ms", str(stats_latency_ms)], cwd=str(ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.url = "http://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the classification server did not start")
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def process_cpu(pid: Optional[int] = None) -> float:
    """User + system CPU seconds of a process (this one by default), from /proc or getrusage."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the stages ----------------------------------------------------------------------------------------------

def spin(iterations: int) -> int:
    """A pure-Python busy loop: holds the GIL, like the original calc_magic_number."""
    acc = 0
    for i in range(iterations):
        acc += i * i
    return acc


def calibrate_spin(seconds: float = T_MAGIC) -> int:
    """Iterations of :func:`spin` that cost ``seconds`` of this thread's CPU time."""
    probe = 200_000
    per = min(_thread_cpu(lambda: spin(probe)) for _ in range(5)) / probe
    return max(1, int(seconds / per))


def _thread_cpu(func: Callable[[], object]) -> float:
    started = time.thread_time()
    func()
    return time.thread_time() - started


def magic_loop(image: np.ndarray) -> float:
    """The definition one pixel at a time (the patched script's loop, Python ints)."""
    result = 0
    for x in range(image.shape[0]):
        for y in range(image.shape[1]):
            result += (x + 1) * (y + 1) * int(image[x, y])
    return result / (image.shape[0] * image.shape[1])


def magic_vector(image: np.ndarray) -> float:
    rows = np.arange(1, image.shape[0] + 1, dtype=np.int64)
    cols = np.arange(1, image.shape[1] + 1, dtype=np.int64)
    return int(rows @ image.astype(np.int64) @ cols) / image.size


def _tiny_jpeg() -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


TINY_JPEG = _tiny_jpeg()
GRAY = np.random.default_rng(2).integers(0, 256, (240, 320), dtype=np.uint8)  # a 640 x 480 photo, halved


class Emulated:
    """The premise emulator: stages cost what the task says (see the module docstring)."""

    name = "emulator"

    def __init__(self, spin_iterations: int):
        self.spin_iterations = spin_iterations

    def items(self, count: int) -> List[str]:
        return ["emulated/%06d.jpg" % i for i in range(count)]

    def prepare(self, item: str, vectorised: bool):
        """(jpeg, magic): 10 ms of rotate + resize without the GIL, then the magic number."""
        time.sleep(T_RR)
        magic = magic_vector(GRAY) if vectorised else float(spin(self.spin_iterations) % 997)
        return TINY_JPEG, magic


class Real:
    """Real 640 x 480 JPEGs: decode, rotate, resize, encode; the magic number of the result."""

    name = "real"

    def __init__(self, folder: Path, count: int):
        from workbench.image_corpus import make_images
        self.folder = Path(folder)
        self.paths = [str(p) for p in make_images(self.folder, count, size=(640, 480))]

    def items(self, count: int) -> List[str]:
        return [self.paths[i % len(self.paths)] for i in range(count)]

    def prepare(self, item: str, vectorised: bool):
        with Image.open(item) as opened:
            opened.load()
            width, height = opened.size
            image = opened.transpose(Image.Transpose.ROTATE_90).resize((height // 2, width // 2))
        grey = np.asarray(image.convert("L"))
        magic = magic_vector(grey) if vectorised else magic_loop(grey)
        buffer = BytesIO()
        image.save(buffer, format="JPEG")
        return buffer.getvalue(), magic


# Module-level, so that worker processes (multiprocessing, Dask) can import them.
_WORKLOAD = None  # set in each worker process of (d)


def _init_worker(workload) -> None:
    global _WORKLOAD
    _WORKLOAD = workload


def _classify(url: str, jpeg: bytes, magic: float, session=None) -> dict:
    poster = session or requests
    response = poster.post(url + "/api/classify", data=jpeg, params={"magic": repr(magic)},
                           headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT)
    response.raise_for_status()
    return response.json()


def _stats(url: str, cls: str, size: int, session=None) -> None:
    poster = session or requests
    poster.post(url + "/api/stats", json={"elapsed": 0.03, "class": cls, "image_size": size},
                timeout=TIMEOUT).raise_for_status()


def _original_image(args) -> tuple:
    """One image in the original design (run by a thread or a process of the pool)."""
    item, url, vectorised = args
    jpeg, magic = _WORKLOAD.prepare(item, vectorised)
    answer = _classify(url, jpeg, magic)
    return answer["class"], len(jpeg)


# --- the designs ---------------------------------------------------------------------------------------------

def _original(workload, n: int, items: List[str], url: str, vectorised: bool, processes: bool) -> None:
    args = [(item, url, vectorised) for item in items]
    if processes:
        pool = multiprocessing.get_context("fork").Pool(n, initializer=_init_worker, initargs=(workload,))
    else:
        _init_worker(workload)
        pool = ThreadPool(n)
    with pool:
        for cls, size in pool.imap_unordered(_original_image, args):
            _stats(url, cls, size)  # in the main thread, one at a time, as the original does


def _asyncio(workload, n: int, items: List[str], url: str) -> None:
    import httpx

    async def main() -> None:
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(n)
        cpu = ThreadPoolExecutor(max(1, min(n, os.cpu_count() or 1) * 2))
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=TIMEOUT) as client:
            async def one(item: str) -> None:
                async with limit:
                    jpeg, magic = await loop.run_in_executor(cpu, workload.prepare, item, True)
                    response = await client.post("/api/classify", content=jpeg, params={"magic": repr(magic)},
                                                 headers={"Content-Type": "image/jpeg"})
                    response.raise_for_status()
                    await client.post("/api/stats", json={"elapsed": 0.03, "class": response.json()["class"],
                                                          "image_size": len(jpeg)})

            pending = set()
            for item in items:  # at most 2n tasks exist at a time
                if len(pending) >= 2 * n:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
                pending.add(asyncio.ensure_future(one(item)))
            for task in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(task, BaseException):
                    raise task
        cpu.shutdown()

    # A loop of its own in a thread of its own: the caller may already run one (Jupyter does).
    failure: List[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=target, name="asyncio-design")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def emulated_prepare(path: str, rotate: bool = True, resize: bool = True, budget=None):
    """The emulator's stages with the fixed pipeline's interface (importable on Dask workers)."""
    from reference.case1.fixed.imaging import Prepared
    time.sleep(T_RR)
    return Prepared(TINY_JPEG, magic_vector(GRAY), (8, 8), "RGB")


def real_prepare(path: str, rotate: bool = True, resize: bool = True, budget=None):
    from reference.case1.fixed.imaging import prepare
    return prepare(path, rotate=rotate, resize=resize, budget=budget)


def _candidates(items: List[str]):
    from reference.case1.fixed.discovery import Candidate
    return (Candidate(item, b"%d" % i) for i, item in enumerate(items))


def _redesigned(workload, n: int, items: List[str], url: str, folder: Path) -> None:
    from reference.case1.fixed.journal import Journal
    from reference.case1.fixed.pipeline import Options, run
    preparer = emulated_prepare if workload.name == "emulator" else real_prepare
    out = folder / ("e_%d_%d.jsonl" % (n, time.monotonic_ns()))
    with Journal(out, {"design": "e"}) as journal:
        summary = run(_candidates(items), Options(url, workers=n, timeout=TIMEOUT, progress=False), journal,
                      preparer=preparer)
    if summary.succeeded != len(items):
        raise RuntimeError("the redesigned pipeline classified %d of %d" % (summary.succeeded, len(items)))


def _distributed(workload, n: int, items: List[str], url: str, folder: Path, client) -> None:
    from reference.case1.fixed.distributed import run_distributed
    from reference.case1.fixed.journal import Journal
    from reference.case1.fixed.pipeline import Options
    preparer = emulated_prepare if workload.name == "emulator" else real_prepare
    workers = len(client.scheduler_info(n_workers=-1)["workers"])
    out = folder / ("f_%d_%d.jsonl" % (n, time.monotonic_ns()))
    partition = max(4 * n, len(items) // (4 * workers))
    with Journal(out, {"design": "f"}) as journal:
        summary = run_distributed(_candidates(items), Options(url, workers=max(1, n // workers), timeout=TIMEOUT,
                                                              progress=False),
                                  journal, partition_size=partition, client=client, preparer=preparer)
    if summary.succeeded != len(items):
        raise RuntimeError("the distributed run classified %d of %d" % (summary.succeeded, len(items)))


def _patched_cli(workload, n: int, url: str, startup: float) -> float:
    """Seconds the patched script spends on the workload's files (its start-up subtracted)."""
    with tempfile.TemporaryDirectory() as cwd:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(PATCHED), "--input-dir", str(workload.folder),
                               "--threads-num", str(n), url], cwd=cwd, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - started
    if proc.returncode != 0 or "Request time" not in proc.stdout:
        raise RuntimeError("the patched script failed: %s" % proc.stderr[-2000:])
    return max(wall - startup, 1e-3)


def patched_startup(url: str) -> float:
    """Wall time of the patched script on a directory without images (interpreter and imports)."""
    with tempfile.TemporaryDirectory() as folder:
        walls = []
        for _ in range(2):
            started = time.perf_counter()
            subprocess.run([sys.executable, str(PATCHED), "--input-dir", folder, url], cwd=folder,
                           capture_output=True, timeout=120)
            walls.append(time.perf_counter() - started)
    return min(walls)


def measure(design: str, workload, n: int, items: int, url: str, folder: Path, dask_client=None,
            startup: float = 0.0, server_pid: Optional[int] = None) -> Dict[str, float]:
    """One run of one design: images/s, wall seconds, client and server CPU seconds per image."""
    names = workload.items(items)
    cpu0 = process_cpu()
    srv0 = process_cpu(server_pid) if server_pid else None
    started = time.perf_counter()
    if design == "a_threads_original" and workload.name == "real":
        wall = _patched_cli(workload, n, url, startup)
        names = workload.paths
    else:
        if design == "a_threads_original":
            _original(workload, n, names, url, vectorised=False, processes=False)
        elif design == "b_threads_vectorised":
            _original(workload, n, names, url, vectorised=True, processes=False)
        elif design == "c_asyncio":
            _asyncio(workload, n, names, url)
        elif design == "d_multiprocessing":
            _original(workload, n, names, url, vectorised=False, processes=True)
        elif design == "e_redesigned":
            _redesigned(workload, n, names, url, folder)
        elif design == "f_distributed":
            _distributed(workload, n, names, url, folder, dask_client)
        else:
            raise ValueError("unknown design %r" % design)
        wall = time.perf_counter() - started
    client_cpu = process_cpu() - cpu0
    server_cpu = process_cpu(server_pid) - srv0 if server_pid else float("nan")
    count = len(names)
    return {"design": design, "workload": workload.name, "N": n, "items": count, "wall_s": wall,
            "images_per_s": count / wall,
            # in-process designs only: the CLI and pool processes are not counted here
            "client_cpu_ms": 1000 * client_cpu / count if design in ("b_threads_vectorised", "c_asyncio",
                                                                      "e_redesigned") else float("nan"),
            "server_cpu_ms": 1000 * server_cpu / count}


def concurrency_levels(design: str, levels: List[int]) -> List[int]:
    if design == "d_multiprocessing":
        return [n for n in levels if n <= MAX_PROCESSES]
    if design == "f_distributed":
        return [n for n in levels if n >= 2]
    return list(levels)


@contextlib.contextmanager
def local_cluster(workers: int = 2):
    from dask.distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=50)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def expected_rate(design: str, n: int, workload: str) -> float:
    """A rough guess of images/s, only to size a run so that it lasts about as long as asked."""
    per_worker = 1 / (T_RR + T_MAGIC + T_REQ + T_STATS) if workload == "emulator" else 12.0
    cap = {"a_threads_original": 80, "b_threads_vectorised": 90, "d_multiprocessing": 90}.get(design, 400)
    if workload == "real":
        cap = {"a_threads_original": 12, "d_multiprocessing": 60}.get(design, 120)
    return min(n * per_worker, cap)


def run_all(levels: List[int], seconds: float, real_images: int, workloads=("emulator", "real"),
            designs=DESIGNS, repeats: int = 1, log: Callable[[str], None] = print) -> List[dict]:
    """Every design at every level on both workloads, interleaved, in one run; a list of rows."""
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="case1-designs-"))
    try:
        spin_iterations = calibrate_spin()
        loads = {}
        if "emulator" in workloads:
            loads["emulator"] = Emulated(spin_iterations)
        if "real" in workloads:
            loads["real"] = Real(folder / "photos", real_images)
        with classifier_process() as server, local_cluster() as dask_client:
            startup = patched_startup(server.url) if "real" in loads else 0.0
            for repeat in range(repeats):
                for name, workload in loads.items():
                    for design in designs:
                        for n in concurrency_levels(design, levels):
                            count = int(max(4 * n, 16, seconds * expected_rate(design, n, name)))
                            row = measure(design, workload, n, count, server.url, folder, dask_client, startup,
                                          server.pid)
                            row["repeat"] = repeat
                            rows.append(row)
                            log("%-9s %-22s N=%-3d %7.1f images/s" % (name, design, n, row["images_per_s"]))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def summarise(rows: List[dict]) -> Dict[str, dict]:
    """{workload: {design: {N: median images/s}}} and the ratio of each design to (a) at the same N."""
    out: Dict[str, dict] = {}
    for row in rows:
        cell = out.setdefault(row["workload"], {}).setdefault(row["design"], {}).setdefault(row["N"], [])
        cell.append(row["images_per_s"])
    table = {w: {d: {n: float(np.median(v)) for n, v in sorted(byn.items())} for d, byn in ds.items()}
             for w, ds in out.items()}
    ratios = {}
    for workload, designs in table.items():
        base = designs.get("a_threads_original", {})
        ratios[workload] = {d: {n: x / base[n] for n, x in byn.items() if base.get(n)} for d, byn in designs.items()}
    best = {w: {d: max(byn.values()) for d, byn in ds.items()} for w, ds in table.items()}
    return {"images_per_s": table, "ratio_to_a": ratios, "best": best,
            "best_ratio_to_a": {w: {d: b / best[w]["a_threads_original"] for d, b in bs.items()}
                                for w, bs in best.items() if best[w].get("a_threads_original")}}


# --- plots ---------------------------------------------------------------------------------------------------

def _pyplot(path: Optional[Path]):
    """pyplot; without a display when the figure only goes to a file."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plain_ticks(ax) -> None:
    """Numbers, not powers, on log axes: 16 and 200 read better than 2^4 and 2x10^2."""
    from matplotlib.ticker import FuncFormatter
    plain = FuncFormatter(lambda value, _: ("%g" % value).replace(".", ","))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)


def _finish(fig, path: Optional[Path]):
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        _pyplot(path).close(fig)
    return fig


def plot_designs(summary: dict, path: Optional[Path] = None, title_suffix: str = ""):
    """images/s against concurrency for every design, one panel per workload (log-log)."""
    plt = _pyplot(path)
    table = summary["images_per_s"]
    fig, axes = plt.subplots(1, len(table), figsize=(6.5 * len(table), 5.2), squeeze=False)
    for ax, (workload, designs) in zip(axes[0], sorted(table.items())):
        for k, design in enumerate(DESIGNS):
            if design not in designs:
                continue
            points = sorted((int(n), x) for n, x in designs[design].items())
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color="C%d" % k, label=LABELS[design])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("одновременность N (потоки / процессы / задачи)")
        ax.set_ylabel("изображений/с")
        ax.set_title(("эмулятор условий (10/10/30/10 мс)" if workload == "emulator" else
                      "настоящие изображения 640×480") + title_suffix)
        ax.grid(True, which="both", alpha=0.3)
        _plain_ticks(ax)
    axes[0][0].legend(fontsize=7, loc="upper left")
    return _finish(fig, path)


def plot_machines(model: dict, path: Optional[Path] = None):
    """Throughput of N machines by resource (the N-machine model) and the week's target."""
    plt = _pyplot(path)
    machines = np.asarray(model["machines"], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 5.2))
    for k, (name, caps) in enumerate(model["caps_by_machines"].items()):
        if all(c is None for c in caps):
            continue  # unlimited under these premises
        ax.plot(machines, [np.nan if c is None else c for c in caps], "-", color="C%d" % k,
                label=model["labels"][name])
    ax.plot(machines, model["throughput"], "k-", lw=2.5, label="пропускная способность (минимум)")
    ax.axhline(model["target_images_per_s"], color="red", ls="--",
               label="100 млн за неделю: %.0f изобр./с" % model["target_images_per_s"])
    if model["machines_needed"]:
        ax.axvline(model["machines_needed"], color="red", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("машин с клиентом")
    ax.set_ylabel("изображений/с")
    ax.set_title(model["title"])
    ax.grid(True, which="both", alpha=0.3)
    _plain_ticks(ax)
    ax.legend(fontsize=8, loc="upper left")
    return _finish(fig, path)


def load_recorded(name: str, folder: Optional[Path] = None) -> dict:
    """A recorded result's data, from ``folder`` (default review/data, the committed run)."""
    path = (folder or ROOT / "review" / "data") / ("%s.json" % name)
    return json.loads(path.read_text(encoding="utf-8"))["data"]


def draw_review_plots(folder: Optional[Path] = None, out: Optional[Path] = None) -> List[Path]:
    """Draw the review's Case 1 scale plots (review/img) from the recorded results."""
    out = out or ROOT / "review" / "img"
    paths = []
    designs = load_recorded("case1_designs", folder)
    paths.append(out / "case1_designs.png")
    plot_designs(designs["summary"], paths[-1])
    machines = load_recorded("case1_machines", folder)
    for key in ("premise", "measured"):
        paths.append(out / ("case1_machines_%s.png" % key))
        plot_machines(machines["models"][key], paths[-1])
    return paths


# --- the N-machine model (question 3) -----------------------------------------------------------------------

WEEK_SECONDS = 7 * 24 * 3600


def listing_rate(folder: Path, files: int) -> float:
    """Directory entries per second that ``os.scandir`` yields on this file system (a flat directory)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / ("f%08d.jpg" % i)).touch()
    started = time.perf_counter()
    with os.scandir(folder) as entries:
        count = sum(1 for _ in entries)
    return count / (time.perf_counter() - started)


def index_rate(folder: Path, rows: int, batch: int = 64) -> float:
    """Results per second the durable index takes (lookup + commit + output append), in batches."""
    from reference.case1.fixed.journal import Journal
    line = json.dumps({"path": "x" * 40, "class": "cat", "score": 0.5, "elapsed": 0.03, "image_size": 40000,
                       "error": None, "stats_error": None})
    with Journal(folder / "rate.jsonl", {"model": True}) as journal:
        started = time.perf_counter()
        for start in range(0, rows, batch):
            keys = [b"dir/%010d.jpg" % i for i in range(start, min(rows, start + batch))]
            journal.done(keys)
            journal.record([(key, line, False, False) for key in keys])
        return rows / (time.perf_counter() - started)


def prepare_cost(path: str, repeats: int = 3) -> Dict[str, float]:
    """CPU seconds of the fixed ``prepare()`` of one file, and its bytes in and out."""
    from reference.case1.fixed.imaging import prepare
    prepared = prepare(path)
    cpu = min(_thread_cpu(lambda: prepare(path)) for _ in range(repeats))
    return {"cpu_s": cpu, "file_bytes": os.path.getsize(path), "jpeg_bytes": len(prepared.jpeg)}


def machines_model(per_image: Dict[str, float], shared: Dict[str, float], machines: np.ndarray,
                   target: float, title: str) -> dict:
    """Throughput of ``machines`` client machines: each resource's capacity and their minimum.

    ``per_image``: ``cores`` (per machine), ``client_cpu_s`` (CPU seconds per image), ``nic_bytes_s``
    (network of one machine), ``bytes`` (read from storage + sent per image). ``shared``: capacities
    that do not grow with the client machines (images/s): the classification service, the stats
    endpoint, the file listing, the coordinating client's index. ``inf`` where unlimited.
    """
    machines = np.asarray(machines, dtype=float)
    caps = {
        "cpu": machines * per_image["cores"] / per_image["client_cpu_s"],
        "network": (machines * per_image["nic_bytes_s"] / per_image["bytes"] if per_image["bytes"] > 0
                    else np.full_like(machines, np.inf)),
    }
    for name, value in shared.items():
        caps[name] = np.full_like(machines, value)
    throughput = np.minimum.reduce(list(caps.values()))
    needed = next((int(m) for m, x in zip(machines, throughput) if x >= target), None)
    binding_at = {int(m): min(caps, key=lambda k: caps[k][i]) for i, m in enumerate(machines)}
    first_shared = min(shared, key=shared.get) if shared else None
    labels = {"cpu": "процессор клиентов", "network": "сеть клиентов (чтение файлов + отправка)",
              "classifier": "сервис классификации", "stats": "эндпоинт статистики",
              "listing": "листинг каталога (один клиент)", "index": "индекс прогресса (один клиент)",
              "storage": "хранилище файлов (общее, 10 Гбит/с)"}
    finite = lambda v: [float(x) if np.isfinite(x) else None for x in v]  # noqa: E731
    return {"title": title, "machines": [int(m) for m in machines], "target_images_per_s": target,
            "caps_by_machines": {k: finite(v) for k, v in caps.items()}, "throughput": finite(throughput),
            "machines_needed": needed, "binding_at": binding_at,
            "binds_first": binding_at[needed] if needed else binding_at[int(machines[-1])],
            "first_shared_limit": first_shared, "labels": labels,
            "per_machine_images_per_s": float(min(caps["cpu"][0], caps["network"][0]) / machines[0])}


if __name__ == "__main__":  # python -m workbench.case1_scale plots [RESULTS_DIR]
    if sys.argv[1:2] == ["plots"]:
        for drawn in draw_review_plots(Path(sys.argv[2]) if len(sys.argv) > 2 else None):
            print(drawn)
    else:
        print("usage: python -m workbench.case1_scale plots [RESULTS_DIR]", file=sys.stderr)
        sys.exit(2)
