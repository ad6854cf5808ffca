/**
 * Which frames go through the shuffle: a deterministic rule over the frame index that every
 * receiver applies on its own, so that all 8 sectors send the same frames without talking to
 * each other per frame.
 *
 * A `SelectionRule` holds from frame `fromIndex` (frames since scan position 0 of detector
 * acquisition `shutterRound`, the index every receiver already shares) until the next rule's
 * `fromIndex`. The shuffle changes the selection only by appending a rule that starts safely
 * after the frames in flight, so receivers that learn it a little late still agree.
 *
 * The detector acquisition a rule applies to is named by `shutterRound`, or, before the shuffle
 * knows it, by `afterRound` (the first one decided after that election round: a resumed
 * acquisition, docs/shuffle.md "Resume after a detector end"); the shuffle pins the round as soon
 * as the first slice shows it, so frames of any other detector acquisition are never selected.
 * After a resume `startIndex` is negative (index 0 of the new detector acquisition is
 * acquisition-relative frame R x P).
 *
 * Per frame: rel = index - startIndex (acquisition-relative), position = rel mod positions;
 * selected iff the base selection takes the position (all, every n-th frame, a mask over the
 * scan, a list of clicked positions) and, when back-pressure decimates by k > 1, a hash of
 * rel falls in 1 of k buckets. Hashing rel (not the position) thins a continuous scan evenly
 * and picks other positions in the next epoch, so a decimated map still fills in over time.
 */
import { TesseraError } from '../errors.js';

export type SelectionBase =
  | { kind: 'all' }
  | { kind: 'none' }
  /** frames with rel mod n === 0 */
  | { kind: 'every'; n: number }
  /** flat row-major mask over the scan (1 = selected) */
  | { kind: 'mask'; mask: Uint8Array }
  /** scan positions (clicked frames) */
  | { kind: 'list'; positions: number[] };

export interface SelectionRule {
  /** the merger acquisition the frames are for */
  acquisition: string;
  /** detector acquisition (election round) the indices count in; null: whichever comes (after `afterRound`) */
  shutterRound: number | null;
  /** with shutterRound null: only detector acquisitions decided after this election round (a resume); null/absent: any */
  afterRound?: number | null;
  /** frame index of the acquisition's scan position 0 (negative after a resume: index 0 is frame R x P) */
  startIndex: number;
  /** scan positions per epoch */
  positions: number;
  /** first frame index the rule holds for */
  fromIndex: number;
  base: SelectionBase;
  /** keep about 1 of `decimate` frames the base selects (back-pressure); 1 = all */
  decimate: number;
}

/** Knuth's multiplicative hash, well spread for consecutive integers. */
export function frameHash(rel: number): number {
  return Math.imul(rel | 0, 0x9e3779b1) >>> 0;
}

/** Whether frame `index` is selected by `rule` (the caller picked the rule that holds there). */
export function ruleSelects(rule: SelectionRule, index: number): boolean {
  if (index < rule.fromIndex || index < rule.startIndex) return false;
  const rel = index - rule.startIndex;
  const b = rule.base;
  let take: boolean;
  switch (b.kind) {
    case 'all':
      take = true;
      break;
    case 'none':
      return false;
    case 'every':
      take = rel % b.n === 0;
      break;
    case 'mask':
      take = b.mask[rel % rule.positions] === 1;
      break;
    case 'list': {
      const p = rel % rule.positions;
      take = b.positions.includes(p);
      break;
    }
  }
  if (!take) return false;
  return rule.decimate <= 1 || (frameHash(rel) >>> 8) % rule.decimate === 0;
}

/**
 * Whether `rule` applies to frames of the detector acquisition decided in election round
 * `round` (null: a receiver that started it on its own; any rule applies, as before rounds).
 */
export function ruleAppliesTo(rule: SelectionRule, round: number | null): boolean {
  if (round === null) return true;
  if (rule.shutterRound !== null) return rule.shutterRound === round;
  return rule.afterRound === undefined || rule.afterRound === null || round > rule.afterRound;
}

/** Check a rule (from the wire or from a user); throws TESSERA_ERR_BAD_ARGUMENT. */
export function checkRule(rule: SelectionRule): SelectionRule {
  const bad = (why: string): never => {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', 'selection', why);
  };
  if (!Number.isInteger(rule.positions) || rule.positions < 1) bad(`positions ${rule.positions}`);
  if (!Number.isInteger(rule.fromIndex) || rule.fromIndex < 0) bad(`fromIndex ${rule.fromIndex}`);
  // negative after a resume (index 0 of the new detector acquisition is frame R x P)
  if (!Number.isSafeInteger(rule.startIndex)) bad(`startIndex ${rule.startIndex}`);
  if (rule.afterRound !== undefined && rule.afterRound !== null && !Number.isSafeInteger(rule.afterRound)) bad(`afterRound ${rule.afterRound}`);
  if (rule.afterRound !== undefined && rule.afterRound !== null && rule.shutterRound !== null) bad('afterRound with a shutterRound');
  if (!Number.isInteger(rule.decimate) || rule.decimate < 1 || rule.decimate > 1 << 20) bad(`decimate ${rule.decimate}`);
  const b = rule.base;
  if (b.kind === 'every' && !(Number.isInteger(b.n) && b.n >= 1)) bad(`every ${b.n}`);
  if (b.kind === 'mask' && b.mask.length !== rule.positions) bad(`mask of ${b.mask.length} for ${rule.positions} positions`);
  if (b.kind === 'list' && !b.positions.every((p) => Number.isInteger(p) && p >= 0 && p < rule.positions)) bad('a listed position is outside the scan');
  return rule;
}

/**
 * Parse a base selection from the command line: `all`, `every:N`, `list:P1,P2,…`,
 * `rect:Y,X,H,W` (a rectangle of the scan, needs the scan width).
 */
export function parseSelection(text: string, scanShape?: [number, number]): SelectionBase {
  const [kind, arg = ''] = text.split(':', 2) as [string, string?];
  const nums = arg.split(',').filter(Boolean).map(Number);
  const bad = (): never => {
    throw new TesseraError('TESSERA_ERR_BAD_ARGUMENT', '--select', `${text}: expected all, every:N, list:P1,P2,… or rect:Y,X,H,W`);
  };
  if (!nums.every(Number.isInteger)) bad();
  switch (kind) {
    case 'all':
      return { kind: 'all' };
    case 'every':
      if (nums.length !== 1 || nums[0]! < 1) bad();
      return { kind: 'every', n: nums[0]! };
    case 'list':
      if (nums.length < 1) bad();
      return { kind: 'list', positions: nums };
    case 'rect': {
      if (nums.length !== 4 || !scanShape) bad();
      const [y, x, h, w] = nums as [number, number, number, number];
      const mask = new Uint8Array(scanShape![0] * scanShape![1]);
      for (let r = y; r < Math.min(y + h, scanShape![0]); r++) for (let c = x; c < Math.min(x + w, scanShape![1]); c++) mask[r * scanShape![1] + c] = 1;
      return { kind: 'mask', mask };
    }
    default:
      return bad();
  }
}

/**
 * The rules in force, ordered by fromIndex: the receivers' and the shuffle's shared view.
 * Old rules are pruned once a newer one holds from an index both sides have passed.
 */
export class RuleBook {
  private rules: SelectionRule[] = [];
  version = 0;

  get list(): readonly SelectionRule[] {
    return this.rules;
  }

  /** Replace everything (a receiver taking the shuffle's book). */
  replace(rules: SelectionRule[], version: number): void {
    this.rules = [...rules].sort((a, b) => a.fromIndex - b.fromIndex);
    this.version = version;
  }

  /** Append a rule from `rule.fromIndex` on (rules after it are dropped: they never held). */
  add(rule: SelectionRule, keep = 16): void {
    checkRule(rule);
    this.rules = this.rules.filter((r) => r.acquisition === rule.acquisition && r.fromIndex < rule.fromIndex);
    this.rules.push(rule);
    if (this.rules.length > keep) this.rules.splice(0, this.rules.length - keep);
    this.version++;
  }

  /**
   * Name the detector acquisition of every rule that did not know it (shutterRound null): the
   * shuffle saw its first slice. Frames of any other detector acquisition are no longer selected.
   * Returns whether anything changed.
   */
  pin(round: number): boolean {
    if (!this.rules.some((r) => r.shutterRound === null)) return false;
    this.rules = this.rules.map((r) => (r.shutterRound === null ? { ...r, shutterRound: round, afterRound: null } : r));
    this.version++;
    return true;
  }

  clear(): void {
    if (this.rules.length === 0) return;
    this.rules = [];
    this.version++;
  }

  /** The rule that holds for frame `index` of detector acquisition `round`, or null. */
  at(index: number, round: number | null): SelectionRule | null {
    let found: SelectionRule | null = null;
    for (const r of this.rules) {
      if (r.fromIndex > index) break;
      if (ruleAppliesTo(r, round)) found = r;
    }
    return found;
  }

  selects(index: number, round: number | null): SelectionRule | null {
    const r = this.at(index, round);
    return r && ruleSelects(r, index) ? r : null;
  }
}
