/**
 * Latest-wins rendering: any number of "something changed" calls between two animation frames
 * cost one render, which reads the newest state at that moment. Nothing is queued per update,
 * so a page that cannot keep up draws less often, never later.
 */
const tasks = new Set<() => void>();
let pending = false;

function flush(): void {
  // tasks scheduled by tasks (new data -> a view's redraw) run in the same frame
  for (let pass = 0; pass < 4 && tasks.size > 0; pass++) {
    const run = [...tasks];
    tasks.clear();
    for (const task of run) {
      try {
        task();
      } catch (err) {
        console.error('render failed', err);
      }
    }
  }
  pending = false;
  if (tasks.size > 0) schedule([...tasks][0]!);
}

/** Run `task` once at the next animation frame (scheduling it again before then is free). */
export function schedule(task: () => void): void {
  tasks.add(task);
  if (pending) return;
  pending = true;
  // a hidden tab gets no animation frames: fall back to a timer so state still settles
  if (document.visibilityState === 'hidden') setTimeout(flush, 250);
  else requestAnimationFrame(flush);
}
