"""`vaejax train` with one fault injected, for tests/test_faults.py. A test-only script: vaejax never reads it.

    python tests/fault_run.py [--kill-at POINT:EPOCH] [--term-at EPOCH] [--poison INDEX] -- <vaejax train arguments>

--kill-at sends SIGKILL to this process at POINT of EPOCH: mid_epoch (after the epoch's first
compiled piece), in_log_write (metrics.jsonl's new content is written but not yet renamed into
place), log_written (just renamed, the epoch's checkpoint not yet started) or in_save (orbax is
writing the epoch's checkpoint). --term-at sends SIGTERM to this process after the first
compiled piece of EPOCH, as a cloud VM's preemption would. --poison turns training image INDEX into NaN.
"""

import argparse
import json
import os
import signal
import sys

import numpy as np


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


def _last_epoch(path):
    with open(path) as f:
        lines = f.read().splitlines()
    return json.loads(lines[-1])["epoch"] if lines else None


def install_callback(callback):
    from vaejax import cli

    make_callbacks = cli._callbacks
    cli._callbacks = lambda args, train_cfg: make_callbacks(args, train_cfg) + [callback]


def install_term(epoch):
    from vaejax import fit

    class Terminator(fit.Callback):
        def on_steps(self, e, done, num_steps, mean_loss):
            if e == epoch and done < num_steps:
                os.kill(os.getpid(), signal.SIGTERM)

    install_callback(Terminator())


def install_kill(point, epoch):
    from vaejax import fit, workdir

    real_replace = os.replace

    def replace(src, dst):  # metrics.jsonl is renamed into place by files.write_atomic
        logged = os.path.basename(dst) == workdir.LOG_FILE and _last_epoch(src) == epoch
        if logged and point == "in_log_write":
            _kill()
        real_replace(src, dst)
        if logged and point == "log_written":
            _kill()

    os.replace = replace

    class Killer(fit.Callback):
        def on_steps(self, e, done, num_steps, mean_loss):
            if point == "mid_epoch" and e == epoch:
                _kill()

        def on_epoch_end(self, e, record, state):  # the epoch's save was just started
            if point == "in_save" and e == epoch:
                _kill()

    install_callback(Killer())


def install_poison(index):
    from vaejax import data

    to_float, calls = data.to_float, []

    def poisoned(images):  # the training split is the first the CLI converts
        x = to_float(images)
        calls.append(1)
        if len(calls) == 1:
            x = np.array(x)
            x[index] = np.nan
        return x

    data.to_float = poisoned


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at")
    parser.add_argument("--term-at", type=int)
    parser.add_argument("--poison", type=int)
    args, rest = parser.parse_known_args()
    rest = rest[1:] if rest[:1] == ["--"] else rest
    if args.kill_at:
        point, epoch = args.kill_at.split(":")
        install_kill(point, int(epoch))
    if args.term_at is not None:
        install_term(args.term_at)
    if args.poison is not None:
        install_poison(args.poison)
    from vaejax import cli

    sys.exit(cli.main(rest))


if __name__ == "__main__":
    main()
