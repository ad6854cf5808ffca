/**
 * Roles started by `tessera start` must not outlive it when it is killed without a chance to
 * stop them (SIGKILL, the OOM killer): an orphaned receiver would keep its UDP port, an orphaned
 * camera simulator would keep sending. `tessera start` sets TESSERA_EXIT_WITH_PARENT to its own
 * pid; the role compares its parent's pid with it, so that a parent killed while the role was
 * still starting up (the role would otherwise take its new parent, init, for the one to watch)
 * is noticed too. The value "1" means: the parent at the time of the call.
 */
export function onParentExit(stop: (why: string) => void, everyMs = 1000): void {
  const v = process.env.TESSERA_EXIT_WITH_PARENT;
  if (v === undefined || v === '' || v === '0') return;
  const parent = v === '1' ? process.ppid : Number(v);
  if (!Number.isInteger(parent) || parent <= 0) return;
  const check = (): boolean => {
    if (process.ppid === parent) return false;
    stop('parent exited');
    return true;
  };
  if (check()) return;
  const timer = setInterval(() => check() && clearInterval(timer), everyMs);
  timer.unref();
}
