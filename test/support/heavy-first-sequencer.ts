/**
 * Test files in an order that keeps both workers busy to the end: the long, process-heavy
 * files (whole pipelines end to end, browsers, the compressed soak) first, the many short ones
 * after them to fill the gaps. Vitest's own order puts larger files first when it has no
 * timings yet (a clean CI checkout), which left the 90 s soak (a small file) to run last, with
 * the other worker idle.
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const HEAVY = [/\/test\/e2e\//, /\/test\/web\//];

export class HeavyFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const heavy = (f: TestSpecification) => HEAVY.some((r) => r.test(f.moduleId));
    // the soak is the longest of all: first
    const rank = (f: TestSpecification) => (/faults-soak/.test(f.moduleId) ? 0 : heavy(f) ? 1 : 2);
    return sorted.map((f, i) => ({ f, i })).sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i).map(({ f }) => f);
  }
}
