"""Disjoint GPUs for jobs that share one machine: ``python -m stages.core.gpu_lease --gpus N -- COMMAND``.

Snakemake's ``gpu`` resource only counts: with ``--resources gpu=8`` it runs two 4-GPU jobs at
once on an 8-GPU box, but both would start on devices 0-3. The rules run each GPU stage under
this lease instead. It takes N free devices among those visible (``CUDA_VISIBLE_DEVICES``, set
by Slurm inside an allocation, else every device of the machine), holding an exclusive
``flock`` on one file per device under ``--dir`` (per host), and runs COMMAND with
``CUDA_VISIBLE_DEVICES`` set to them and ``R1ZERO_GPUS_PROMISED=N``; the stage checks at start
that it sees exactly N devices (``stages.core.distributed.check_promised_devices``). The locks
die with this process, so a killed job never leaves a device taken.

Example:
    python -m stages.core.gpu_lease --gpus 4 --dir results/.gpu_leases -- torchrun --standalone --nproc_per_node 4 -m stages.grpo ...
    >>> free_devices(["0", "1", "2", "3"], taken={"1"})
    ['0', '2', '3']
"""
from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 5.0  # between attempts while every device is taken


def visible_devices(environ: dict | None = None, dev_dir: str = "/dev") -> list[str]:
    """Device ids this process may use: CUDA_VISIBLE_DEVICES if set, else /dev/nvidiaN.

    >>> visible_devices({"CUDA_VISIBLE_DEVICES": "2,3"})
    ['2', '3']
    """
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [device.strip() for device in listed.split(",") if device.strip() and device.strip() != "-1"]
    numbers = sorted(int(path.name[len("nvidia"):]) for path in Path(dev_dir).glob("nvidia[0-9]*")
                     if path.name[len("nvidia"):].isdigit())
    return [str(number) for number in numbers]


def free_devices(devices: list[str], taken: set[str]) -> list[str]:
    return [device for device in devices if device not in taken]


def try_lease(devices: list[str], count: int, lock_dir: Path) -> tuple[list[str], list]:
    """Lock ``count`` of ``devices``; ([], []) when fewer are free (nothing stays locked then)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    got, handles = [], []
    for device in devices:
        handle = open(lock_dir / f"gpu{device}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        got.append(device)
        handles.append(handle)
        if len(got) == count:
            return got, handles
    for handle in handles:
        handle.close()
    return [], []


def lease(count: int, lock_root: Path, timeout_s: float) -> tuple[list[str], list]:
    devices = visible_devices()
    if len(devices) < count:
        raise SystemExit(f"gpu_lease: {count} GPU(s) asked for but this machine shows {len(devices)} "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    if os.environ.get("SLURM_JOB_ID"):
        # Inside a Slurm allocation the devices are the job's own (and may be renumbered from 0 in
        # every job of a node, so per-number locks would make jobs wait for each other): no locks.
        return devices[:count], []
    lock_dir = lock_root / socket.gethostname()  # device numbers are per host
    deadline = time.monotonic() + timeout_s
    while True:
        got, handles = try_lease(devices, count, lock_dir)
        if got:
            return got, handles
        if time.monotonic() > deadline:
            raise SystemExit(f"gpu_lease: no {count} free GPU(s) among {devices} after {timeout_s:.0f} s "
                             f"(locks in {lock_dir})")
        time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, required=True, help="devices to lease")
    parser.add_argument("--dir", default="results/.gpu_leases", help="lock directory (per-host subfolders)")
    parser.add_argument("--timeout-s", type=float, default=24 * 3600, help="give up waiting after this long")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    devices, handles = lease(args.gpus, Path(args.dir), args.timeout_s)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(devices), "R1ZERO_GPUS_PROMISED": str(len(devices))}
    print(f"gpu_lease: devices {','.join(devices)} for: {' '.join(command)}", file=sys.stderr, flush=True)
    child = subprocess.Popen(command, env=env)
    # Snakemake and Slurm stop a job with SIGTERM: pass it on, and keep the lease until the child ends.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: child.send_signal(number))
    code = child.wait()
    for handle in handles:
        handle.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
