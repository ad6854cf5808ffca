;; Tile kernels for the standard UDFs on uint16 tiles (the K2 IS's decoded dtype), with
;; WebAssembly SIMD. JavaScript loops over typed arrays reach about 1-2 GB/s here; these reach
;; memory speed. All sums are exact integer arithmetic (u32/i64 lanes, flushed to f64 before
;; they could overflow), so results do not depend on how the data was cut into tiles.
;;
;; Memory is imported (no maximum, so that any memory fits, e.g. the one a decoder writes tiles
;; into): the JavaScript side (kernels.ts) owns it, stages tiles into it and keeps accumulators
;; there. Pointers are byte offsets; pixel counts need not be multiples of 8.
(module
  (memory (import "env" "memory") 1)

  ;; Add the 4 u32 lanes of $x as f64 to a running f64.
  (func $lanes_u32_f64 (param $x v128) (result f64)
    (f64.add
      (f64.add (f64.convert_i32_u (i32x4.extract_lane 0 (local.get $x))) (f64.convert_i32_u (i32x4.extract_lane 1 (local.get $x))))
      (f64.add (f64.convert_i32_u (i32x4.extract_lane 2 (local.get $x))) (f64.convert_i32_u (i32x4.extract_lane 3 (local.get $x))))))

;; The 4 u32 lanes of $x summed as i64.
  (func $lanes_u32_i64 (param $x v128) (result i64)
    (i64.add
      (i64.add (i64.extend_i32_u (i32x4.extract_lane 0 (local.get $x))) (i64.extend_i32_u (i32x4.extract_lane 1 (local.get $x))))
      (i64.add (i64.extend_i32_u (i32x4.extract_lane 2 (local.get $x))) (i64.extend_i32_u (i32x4.extract_lane 3 (local.get $x))))))

  ;; Sum of $n u16 values at $p, as f64. Lanes hold pairwise sums (<= 131070 per step) and are
  ;; flushed every 32768 steps, before they could pass 2^32.
  (func $sum_u16 (param $p i32) (param $n i32) (result f64)
    (local $end i32) (local $vend i32) (local $block i32) (local $a v128) (local $total f64)
    (local.set $end (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 1))))
    (local.set $vend (i32.add (local.get $p) (i32.shl (i32.and (local.get $n) (i32.const -8)) (i32.const 1))))
    (block $done
      (loop $blocks
        (br_if $done (i32.ge_u (local.get $p) (local.get $vend)))
        (local.set $a (v128.const i64x2 0 0))
        (local.set $block (i32.add (local.get $p) (i32.const 524288))) ;; 32768 steps of 16 bytes
        (if (i32.gt_u (local.get $block) (local.get $vend)) (then (local.set $block (local.get $vend))))
        (loop $steps
          (local.set $a (i32x4.add (local.get $a) (i32x4.extadd_pairwise_i16x8_u (v128.load (local.get $p)))))
          (local.set $p (i32.add (local.get $p) (i32.const 16)))
          (br_if $steps (i32.lt_u (local.get $p) (local.get $block))))
        (local.set $total (f64.add (local.get $total) (call $lanes_u32_f64 (local.get $a))))
        (br $blocks)))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $total (f64.add (local.get $total) (f64.convert_i32_u (i32.load16_u (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (i32.const 2)))
        (br $tail)))
    (local.get $total))

  ;; out[f] (f64) += sum of frame f, for the $depth frames of $n pixels at $src.
  (func (export "frame_sums_u16") (param $src i32) (param $n i32) (param $depth i32) (param $out i32)
    (local $f i32) (local $q i32)
    (block $done
      (loop $frames
        (br_if $done (i32.ge_u (local.get $f) (local.get $depth)))
        (local.set $q (i32.add (local.get $out) (i32.shl (local.get $f) (i32.const 3))))
        (f64.store (local.get $q)
          (f64.add (f64.load (local.get $q))
            (call $sum_u16 (i32.add (local.get $src) (i32.shl (i32.mul (local.get $f) (local.get $n)) (i32.const 1))) (local.get $n))))
        (local.set $f (i32.add (local.get $f) (i32.const 1)))
        (br $frames))))

  ;; acc[i] (u32) += sum over the $depth frames of pixel i ($n pixels per frame at $src).
  ;; The caller flushes acc before a pixel could pass 2^32 (65537 frames of u16).
  (func (export "sum_frames_u16_u32") (param $src i32) (param $n i32) (param $depth i32) (param $acc i32)
    (local $i i32) (local $f i32) (local $p i32) (local $q i32) (local $v v128) (local $lo v128) (local $hi v128)
    (local $n8 i32) (local $stride i32) (local $s i32)
    (local.set $n8 (i32.and (local.get $n) (i32.const -8)))
    (local.set $stride (i32.shl (local.get $n) (i32.const 1)))
    (block $done
      (loop $pixels
        (br_if $done (i32.ge_u (local.get $i) (local.get $n8)))
        (local.set $p (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1))))
        (local.set $v (v128.load (local.get $p)))
        (local.set $lo (i32x4.extend_low_i16x8_u (local.get $v)))
        (local.set $hi (i32x4.extend_high_i16x8_u (local.get $v)))
        (local.set $f (i32.const 1))
        (block $frames_done
          (loop $frames
            (br_if $frames_done (i32.ge_u (local.get $f) (local.get $depth)))
            (local.set $p (i32.add (local.get $p) (local.get $stride)))
            (local.set $v (v128.load (local.get $p)))
            (local.set $lo (i32x4.add (local.get $lo) (i32x4.extend_low_i16x8_u (local.get $v))))
            (local.set $hi (i32x4.add (local.get $hi) (i32x4.extend_high_i16x8_u (local.get $v))))
            (local.set $f (i32.add (local.get $f) (i32.const 1)))
            (br $frames)))
        (local.set $q (i32.add (local.get $acc) (i32.shl (local.get $i) (i32.const 2))))
        (v128.store offset=0 (local.get $q) (i32x4.add (v128.load offset=0 (local.get $q)) (local.get $lo)))
        (v128.store offset=16 (local.get $q) (i32x4.add (v128.load offset=16 (local.get $q)) (local.get $hi)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $pixels)))
    ;; the last n mod 8 pixels
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $s (i32.const 0))
        (local.set $f (i32.const 0))
        (local.set $p (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1))))
        (block $tf_done
          (loop $tf
            (br_if $tf_done (i32.ge_u (local.get $f) (local.get $depth)))
            (local.set $s (i32.add (local.get $s) (i32.load16_u (local.get $p))))
            (local.set $p (i32.add (local.get $p) (local.get $stride)))
            (local.set $f (i32.add (local.get $f) (i32.const 1)))
            (br $tf)))
        (local.set $q (i32.add (local.get $acc) (i32.shl (local.get $i) (i32.const 2))))
        (i32.store (local.get $q) (i32.add (i32.load (local.get $q)) (local.get $s)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $tail))))

  ;; Centre-of-mass sums of whole tiles: for each of the $depth frames of $rows x $w pixels at
  ;; $src, out[3f] += sum v, out[3f+1] += sum v (y0 + r), out[3f+2] += sum v (x0 + c) (f64).
  ;; Per row: sum v in u32 lanes (<= w/4 * 65535 each); sum v c per block of 256 columns as
  ;; cb sum v + sum v (c - cb), the latter in u32 lanes (< 2^30), then in i64 (exact).
  (func (export "com_sums_u16") (param $src i32) (param $rows i32) (param $w i32) (param $depth i32) (param $y0 i32) (param $x0 i32) (param $out i32)
    (local $f i32) (local $r i32) (local $c i32) (local $p i32) (local $q i32) (local $w8 i32)
    (local $v v128) (local $lo v128) (local $hi v128) (local $rs v128) (local $rx v128) (local $clo v128) (local $chi v128)
    (local $rowx i64) (local $cb i32) (local $bend i32) (local $bs v128) (local $bx v128) (local $jv v128)
    (local $row_s f64) (local $row_x f64) (local $s f64) (local $sy f64) (local $sx f64) (local $tail_s i32) (local $tail_x i64) (local $px i32)
    (local.set $w8 (i32.and (local.get $w) (i32.const -8)))
    (local.set $p (local.get $src))
    (block $frames_done
      (loop $frames
        (br_if $frames_done (i32.ge_u (local.get $f) (local.get $depth)))
        (local.set $s (f64.const 0))
        (local.set $sy (f64.const 0))
        (local.set $sx (f64.const 0))
        (local.set $r (i32.const 0))
        (block $rows_done
          (loop $rows_loop
            (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $rs (v128.const i64x2 0 0))
            (local.set $rowx (i64.const 0))
            (local.set $c (i32.const 0))
            ;; blocks of up to 256 columns: sum v (j - block start) in u32 lanes stays below 2^30
            (block $cols_done
              (loop $blocks
                (br_if $cols_done (i32.ge_u (local.get $c) (local.get $w8)))
                (local.set $cb (local.get $c))
                (local.set $bend (i32.add (local.get $c) (i32.const 256)))
                (if (i32.gt_u (local.get $bend) (local.get $w8)) (then (local.set $bend (local.get $w8))))
                (local.set $bs (v128.const i64x2 0 0))
                (local.set $bx (v128.const i64x2 0 0))
                (local.set $jv (v128.const i16x8 0 1 2 3 4 5 6 7))
                (loop $cols
                  (local.set $v (v128.load (local.get $p)))
                  (local.set $bs (i32x4.add (local.get $bs) (i32x4.extadd_pairwise_i16x8_u (local.get $v))))
                  (local.set $bx (i32x4.add (local.get $bx)
                    (i32x4.add (i32x4.extmul_low_i16x8_u (local.get $v) (local.get $jv)) (i32x4.extmul_high_i16x8_u (local.get $v) (local.get $jv)))))
                  (local.set $jv (i16x8.add (local.get $jv) (v128.const i16x8 8 8 8 8 8 8 8 8)))
                  (local.set $p (i32.add (local.get $p) (i32.const 16)))
                  (local.set $c (i32.add (local.get $c) (i32.const 8)))
                  (br_if $cols (i32.lt_u (local.get $c) (local.get $bend))))
                (local.set $rs (i32x4.add (local.get $rs) (local.get $bs)))
                (local.set $rowx (i64.add (local.get $rowx)
                  (i64.add (i64.mul (i64.extend_i32_u (local.get $cb)) (call $lanes_u32_i64 (local.get $bs))) (call $lanes_u32_i64 (local.get $bx)))))
                (br $blocks)))
            (local.set $tail_s (i32.const 0))
            (local.set $tail_x (i64.const 0))
            (block $tail_done
              (loop $tail
                (br_if $tail_done (i32.ge_u (local.get $c) (local.get $w)))
                (local.set $px (i32.load16_u (local.get $p)))
                (local.set $tail_s (i32.add (local.get $tail_s) (local.get $px)))
                (local.set $tail_x (i64.add (local.get $tail_x) (i64.mul (i64.extend_i32_u (local.get $px)) (i64.extend_i32_u (local.get $c)))))
                (local.set $p (i32.add (local.get $p) (i32.const 2)))
                (local.set $c (i32.add (local.get $c) (i32.const 1)))
                (br $tail)))
            (local.set $row_s (f64.add (call $lanes_u32_f64 (local.get $rs)) (f64.convert_i32_u (local.get $tail_s))))
            (local.set $row_x (f64.convert_i64_u (i64.add (local.get $tail_x) (local.get $rowx))))
            (local.set $s (f64.add (local.get $s) (local.get $row_s)))
            (local.set $sy (f64.add (local.get $sy) (f64.mul (local.get $row_s) (f64.convert_i32_u (i32.add (local.get $y0) (local.get $r))))))
            (local.set $sx (f64.add (local.get $sx) (f64.add (local.get $row_x) (f64.mul (local.get $row_s) (f64.convert_i32_u (local.get $x0))))))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rows_loop)))
        (local.set $q (i32.add (local.get $out) (i32.mul (local.get $f) (i32.const 24))))
        (f64.store offset=0 (local.get $q) (f64.add (f64.load offset=0 (local.get $q)) (local.get $s)))
        (f64.store offset=8 (local.get $q) (f64.add (f64.load offset=8 (local.get $q)) (local.get $sy)))
        (f64.store offset=16 (local.get $q) (f64.add (f64.load offset=16 (local.get $q)) (local.get $sx)))
        (local.set $f (i32.add (local.get $f) (i32.const 1)))
        (br $frames))))

  ;; Masks as runs of equal pixels (disks, rings, rectangles, binary masks): out[f * stride] (f64,
  ;; stride in elements) += sum over the $nruns runs of frame f's pixels. A run is two i32 at
  ;; $runs: first pixel (flat, relative to $first) and length. Exact: integer sums.
  (func (export "runs_sum_u16") (param $src i32) (param $first i32) (param $runs i32) (param $nruns i32) (param $depth i32) (param $n i32) (param $out i32) (param $stride i32)
    (local $f i32) (local $base i32) (local $j i32) (local $r i32) (local $acc f64) (local $q i32)
    (block $done
      (loop $frames
        (br_if $done (i32.ge_u (local.get $f) (local.get $depth)))
        (local.set $base (i32.add (local.get $src) (i32.shl (i32.sub (i32.mul (local.get $f) (local.get $n)) (local.get $first)) (i32.const 1))))
        (local.set $acc (f64.const 0))
        (local.set $j (i32.const 0))
        (local.set $r (local.get $runs))
        (block $runs_done
          (loop $each
            (br_if $runs_done (i32.ge_u (local.get $j) (local.get $nruns)))
            (local.set $acc (f64.add (local.get $acc)
              (call $sum_u16 (i32.add (local.get $base) (i32.shl (i32.load (local.get $r)) (i32.const 1))) (i32.load offset=4 (local.get $r)))))
            (local.set $r (i32.add (local.get $r) (i32.const 8)))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $each)))
        (local.set $q (i32.add (local.get $out) (i32.shl (i32.mul (local.get $f) (local.get $stride)) (i32.const 3))))
        (f64.store (local.get $q) (f64.add (f64.load (local.get $q)) (local.get $acc)))
        (local.set $f (i32.add (local.get $f) (i32.const 1)))
        (br $frames))))

  ;; Sparse masks with arbitrary values: out[f * stride] += sum_j pixel(idx[j] - first) * val[j],
  ;; in the same order and f64 arithmetic as the JavaScript loop (bit-identical results).
  (func (export "sparse_dot_u16") (param $src i32) (param $first i32) (param $idx i32) (param $val i32) (param $count i32) (param $depth i32) (param $n i32) (param $out i32) (param $stride i32)
    (local $f i32) (local $base i32) (local $j i32) (local $acc f64) (local $q i32)
    (block $done
      (loop $frames
        (br_if $done (i32.ge_u (local.get $f) (local.get $depth)))
        (local.set $base (i32.add (local.get $src) (i32.shl (i32.sub (i32.mul (local.get $f) (local.get $n)) (local.get $first)) (i32.const 1))))
        (local.set $acc (f64.const 0))
        (local.set $j (i32.const 0))
        (block $each_done
          (loop $each
            (br_if $each_done (i32.ge_u (local.get $j) (local.get $count)))
            (local.set $acc (f64.add (local.get $acc)
              (f64.mul
                (f64.convert_i32_u (i32.load16_u (i32.add (local.get $base) (i32.shl (i32.load (i32.add (local.get $idx) (i32.shl (local.get $j) (i32.const 2)))) (i32.const 1)))))
                (f64.load (i32.add (local.get $val) (i32.shl (local.get $j) (i32.const 3)))))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $each)))
        (local.set $q (i32.add (local.get $out) (i32.shl (i32.mul (local.get $f) (local.get $stride)) (i32.const 3))))
        (f64.store (local.get $q) (f64.add (f64.load (local.get $q)) (local.get $acc)))
        (local.set $f (i32.add (local.get $f) (i32.const 1)))
        (br $frames))))

  ;; Dense masks: out[f * stride] += sum_i pixel_i * mask_i over the $n pixels of each frame,
  ;; mask f64 at $mask. f64x2 lanes: exact for integer-valued masks (every partial sum is an
  ;; integer below 2^53); for others the rounding differs from a sequential sum by a few ulp.
  (func (export "dense_dot_u16_f64") (param $src i32) (param $mask i32) (param $n i32) (param $depth i32) (param $out i32) (param $stride i32)
    (local $f i32) (local $p i32) (local $m i32) (local $end i32) (local $vend i32) (local $v v128) (local $lo v128) (local $hi v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128) (local $acc f64) (local $q i32)
    (local.set $p (local.get $src))
    (block $done
      (loop $frames
        (br_if $done (i32.ge_u (local.get $f) (local.get $depth)))
        (local.set $end (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 1))))
        (local.set $vend (i32.add (local.get $p) (i32.shl (i32.and (local.get $n) (i32.const -8)) (i32.const 1))))
        (local.set $m (local.get $mask))
        (local.set $a0 (v128.const i64x2 0 0))
        (local.set $a1 (v128.const i64x2 0 0))
        (local.set $a2 (v128.const i64x2 0 0))
        (local.set $a3 (v128.const i64x2 0 0))
        (block $vdone
          (loop $vec
            (br_if $vdone (i32.ge_u (local.get $p) (local.get $vend)))
            (local.set $v (v128.load (local.get $p)))
            (local.set $lo (i32x4.extend_low_i16x8_u (local.get $v)))
            (local.set $hi (i32x4.extend_high_i16x8_u (local.get $v)))
            (local.set $a0 (f64x2.add (local.get $a0) (f64x2.mul (f64x2.convert_low_i32x4_u (local.get $lo)) (v128.load offset=0 (local.get $m)))))
            (local.set $a1 (f64x2.add (local.get $a1) (f64x2.mul (f64x2.convert_low_i32x4_u (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $lo) (local.get $lo))) (v128.load offset=16 (local.get $m)))))
            (local.set $a2 (f64x2.add (local.get $a2) (f64x2.mul (f64x2.convert_low_i32x4_u (local.get $hi)) (v128.load offset=32 (local.get $m)))))
            (local.set $a3 (f64x2.add (local.get $a3) (f64x2.mul (f64x2.convert_low_i32x4_u (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $hi) (local.get $hi))) (v128.load offset=48 (local.get $m)))))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (local.set $m (i32.add (local.get $m) (i32.const 64)))
            (br $vec)))
        (local.set $a0 (f64x2.add (f64x2.add (local.get $a0) (local.get $a1)) (f64x2.add (local.get $a2) (local.get $a3))))
        (local.set $acc (f64.add (f64x2.extract_lane 0 (local.get $a0)) (f64x2.extract_lane 1 (local.get $a0))))
        (block $tdone
          (loop $tail
            (br_if $tdone (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $acc (f64.add (local.get $acc) (f64.mul (f64.convert_i32_u (i32.load16_u (local.get $p))) (f64.load (local.get $m)))))
            (local.set $p (i32.add (local.get $p) (i32.const 2)))
            (local.set $m (i32.add (local.get $m) (i32.const 8)))
            (br $tail)))
        (local.set $q (i32.add (local.get $out) (i32.shl (i32.mul (local.get $f) (local.get $stride)) (i32.const 3))))
        (f64.store (local.get $q) (f64.add (f64.load (local.get $q)) (local.get $acc)))
        (local.set $f (i32.add (local.get $f) (i32.const 1)))
        (br $frames))))

;; StdDev of a batch of $depth (<= 1024) frames merged into per-pixel (sum, varsum) f64 with
  ;; Chan's formula. Per pixel: s = sum x and q = sum x^2 exactly (sq_sums_u16), the batch's
  ;; varsum m = (depth q - s^2) / depth (exact integers below 2^53, one rounding), then, as
  ;; mergeStdDev in stddev.ts with n0 frames merged before and c = n0 depth / (n0 + depth):
  ;; d = s / depth - sum / n0; varsum += m + c d d; sum += s (n0 = 0: sum = s, varsum = m).
  ;; The same f64 operations as the JavaScript twin in stddev.ts: bit-identical results.
  (func $stddev_pixel (param $s f64) (param $q f64) (param $depth f64) (param $n0 f64) (param $c f64) (param $sp i32) (param $vp i32)
    (local $m f64) (local $d f64)
    (local.set $m (f64.div (f64.sub (f64.mul (local.get $depth) (local.get $q)) (f64.mul (local.get $s) (local.get $s))) (local.get $depth)))
    (if (f64.eq (local.get $n0) (f64.const 0))
      (then
        (f64.store (local.get $sp) (local.get $s))
        (f64.store (local.get $vp) (local.get $m)))
      (else
        (local.set $d (f64.sub (f64.div (local.get $s) (local.get $depth)) (f64.div (f64.load (local.get $sp)) (local.get $n0))))
        (f64.store (local.get $vp) (f64.add (f64.load (local.get $vp)) (f64.add (local.get $m) (f64.mul (f64.mul (local.get $c) (local.get $d)) (local.get $d)))))
        (f64.store (local.get $sp) (f64.add (f64.load (local.get $sp)) (local.get $s))))))

;; Two u64 lanes below 2^52 as f64 (exact): or the exponent of 2^52 in, subtract 2^52.
  (func $u52_f64 (param $q v128) (result v128)
    (f64x2.sub (v128.or (local.get $q) (v128.const i64x2 0x4330000000000000 0x4330000000000000)) (v128.const f64x2 0x1p52 0x1p52)))

  ;; $stddev_pixel for two adjacent pixels in f64x2 lanes (IEEE per lane: the same bits).
  (func $stddev_pair (param $s v128) (param $q v128) (param $d v128) (param $n0 v128) (param $c v128) (param $first i32) (param $sp i32) (param $vp i32)
    (local $m v128) (local $dd v128)
    (local.set $m (f64x2.div (f64x2.sub (f64x2.mul (local.get $d) (local.get $q)) (f64x2.mul (local.get $s) (local.get $s))) (local.get $d)))
    (if (local.get $first)
      (then
        (v128.store (local.get $sp) (local.get $s))
        (v128.store (local.get $vp) (local.get $m)))
      (else
        (local.set $dd (f64x2.sub (f64x2.div (local.get $s) (local.get $d)) (f64x2.div (v128.load (local.get $sp)) (local.get $n0))))
        (v128.store (local.get $vp) (f64x2.add (v128.load (local.get $vp)) (f64x2.add (local.get $m) (f64x2.mul (f64x2.mul (local.get $c) (local.get $dd)) (local.get $dd)))))
        (v128.store (local.get $sp) (f64x2.add (v128.load (local.get $sp)) (local.get $s))))))

  ;; StdDev, batched: s[i] (u32) += sum x, q[i] (u64) += sum x^2 over the $depth frames of $n
  ;; pixels at $src. The caller flushes (stddev_flush) before a batch passes 1024 frames.
  (func (export "sq_sums_u16") (param $src i32) (param $n i32) (param $depth i32) (param $s i32) (param $q i32)
    (local $i i32) (local $f i32) (local $p i32) (local $n8 i32) (local $stride i32) (local $sp i32) (local $qp i32)
    (local $v v128) (local $slo v128) (local $shi v128) (local $q0 v128) (local $q1 v128) (local $q2 v128) (local $q3 v128) (local $sq v128)
    (local $x i32) (local $ts i32) (local $tq i64)
    (local.set $n8 (i32.and (local.get $n) (i32.const -8)))
    (local.set $stride (i32.shl (local.get $n) (i32.const 1)))
    (block $done
      (loop $pixels
        (br_if $done (i32.ge_u (local.get $i) (local.get $n8)))
        (local.set $p (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1))))
        (local.set $sp (i32.add (local.get $s) (i32.shl (local.get $i) (i32.const 2))))
        (local.set $qp (i32.add (local.get $q) (i32.shl (local.get $i) (i32.const 3))))
        (local.set $slo (v128.load offset=0 (local.get $sp)))
        (local.set $shi (v128.load offset=16 (local.get $sp)))
        (local.set $q0 (v128.load offset=0 (local.get $qp)))
        (local.set $q1 (v128.load offset=16 (local.get $qp)))
        (local.set $q2 (v128.load offset=32 (local.get $qp)))
        (local.set $q3 (v128.load offset=48 (local.get $qp)))
        (local.set $f (i32.const 0))
        (block $frames_done
          (loop $frames
            (br_if $frames_done (i32.ge_u (local.get $f) (local.get $depth)))
            (local.set $v (v128.load (local.get $p)))
            (local.set $slo (i32x4.add (local.get $slo) (i32x4.extend_low_i16x8_u (local.get $v))))
            (local.set $shi (i32x4.add (local.get $shi) (i32x4.extend_high_i16x8_u (local.get $v))))
            (local.set $sq (i32x4.extmul_low_i16x8_u (local.get $v) (local.get $v)))
            (local.set $q0 (i64x2.add (local.get $q0) (i64x2.extend_low_i32x4_u (local.get $sq))))
            (local.set $q1 (i64x2.add (local.get $q1) (i64x2.extend_high_i32x4_u (local.get $sq))))
            (local.set $sq (i32x4.extmul_high_i16x8_u (local.get $v) (local.get $v)))
            (local.set $q2 (i64x2.add (local.get $q2) (i64x2.extend_low_i32x4_u (local.get $sq))))
            (local.set $q3 (i64x2.add (local.get $q3) (i64x2.extend_high_i32x4_u (local.get $sq))))
            (local.set $p (i32.add (local.get $p) (local.get $stride)))
            (local.set $f (i32.add (local.get $f) (i32.const 1)))
            (br $frames)))
        (v128.store offset=0 (local.get $sp) (local.get $slo))
        (v128.store offset=16 (local.get $sp) (local.get $shi))
        (v128.store offset=0 (local.get $qp) (local.get $q0))
        (v128.store offset=16 (local.get $qp) (local.get $q1))
        (v128.store offset=32 (local.get $qp) (local.get $q2))
        (v128.store offset=48 (local.get $qp) (local.get $q3))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $pixels)))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $p (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1))))
        (local.set $ts (i32.const 0))
        (local.set $tq (i64.const 0))
        (local.set $f (i32.const 0))
        (block $tf_done
          (loop $tf
            (br_if $tf_done (i32.ge_u (local.get $f) (local.get $depth)))
            (local.set $x (i32.load16_u (local.get $p)))
            (local.set $ts (i32.add (local.get $ts) (local.get $x)))
            (local.set $tq (i64.add (local.get $tq) (i64.extend_i32_u (i32.mul (local.get $x) (local.get $x)))))
            (local.set $p (i32.add (local.get $p) (local.get $stride)))
            (local.set $f (i32.add (local.get $f) (i32.const 1)))
            (br $tf)))
        (local.set $sp (i32.add (local.get $s) (i32.shl (local.get $i) (i32.const 2))))
        (local.set $qp (i32.add (local.get $q) (i32.shl (local.get $i) (i32.const 3))))
        (i32.store (local.get $sp) (i32.add (i32.load (local.get $sp)) (local.get $ts)))
        (i64.store (local.get $qp) (i64.add (i64.load (local.get $qp)) (local.get $tq)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $tail))))

  ;; Merge a batch of $depth (<= 1024) frames, s and q from sq_sums_u16, into (sum, varsum) as
  ;; $stddev_pixel does (n0 frames merged before, c = n0 depth / (n0 + depth)); zero s and q.
  (func (export "stddev_flush") (param $n i32) (param $depth i32) (param $n0 f64) (param $c f64) (param $s i32) (param $q i32) (param $sum i32) (param $var i32)
    (local $i i32) (local $n2 i32) (local $fd f64) (local $vd v128) (local $vn0 v128) (local $vc v128) (local $first i32) (local $sp i32) (local $qp i32)
    (local.set $fd (f64.convert_i32_u (local.get $depth)))
    (local.set $vd (f64x2.splat (local.get $fd)))
    (local.set $vn0 (f64x2.splat (local.get $n0)))
    (local.set $vc (f64x2.splat (local.get $c)))
    (local.set $first (f64.eq (local.get $n0) (f64.const 0)))
    (local.set $n2 (i32.and (local.get $n) (i32.const -2)))
    (block $done
      (loop $pairs
        (br_if $done (i32.ge_u (local.get $i) (local.get $n2)))
        (local.set $sp (i32.add (local.get $s) (i32.shl (local.get $i) (i32.const 2))))
        (local.set $qp (i32.add (local.get $q) (i32.shl (local.get $i) (i32.const 3))))
        (call $stddev_pair (f64x2.convert_low_i32x4_u (v128.load64_zero (local.get $sp))) (call $u52_f64 (v128.load (local.get $qp)))
          (local.get $vd) (local.get $vn0) (local.get $vc) (local.get $first)
          (i32.add (local.get $sum) (i32.shl (local.get $i) (i32.const 3))) (i32.add (local.get $var) (i32.shl (local.get $i) (i32.const 3))))
        (i64.store (local.get $sp) (i64.const 0))
        (v128.store (local.get $qp) (v128.const i64x2 0 0))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $pairs)))
    (if (i32.lt_u (local.get $i) (local.get $n))
      (then
        (local.set $sp (i32.add (local.get $s) (i32.shl (local.get $i) (i32.const 2))))
        (local.set $qp (i32.add (local.get $q) (i32.shl (local.get $i) (i32.const 3))))
        (call $stddev_pixel (f64.convert_i32_u (i32.load (local.get $sp))) (f64.convert_i64_u (i64.load (local.get $qp)))
          (local.get $fd) (local.get $n0) (local.get $c)
          (i32.add (local.get $sum) (i32.shl (local.get $i) (i32.const 3))) (i32.add (local.get $var) (i32.shl (local.get $i) (i32.const 3))))
        (i32.store (local.get $sp) (i32.const 0))
        (i64.store (local.get $qp) (i64.const 0)))))

  ;; acc[i] (u32) += pixel i of one frame of $n pixels at $src; returns the frame's total (f64,
  ;; exact): SumUDF's accumulation and SumSigUDF's frame sum in one read of the frame. Lane
  ;; totals are flushed every 32768 steps, before they could pass 2^32.
  (func (export "sum_frame_u16_u32_total") (param $src i32) (param $n i32) (param $acc i32) (result f64)
    (local $i i32) (local $n8 i32) (local $block i32) (local $p i32) (local $q i32) (local $v v128) (local $lo v128) (local $hi v128)
    (local $t v128) (local $total f64) (local $x i32)
    (local.set $n8 (i32.and (local.get $n) (i32.const -8)))
    (block $done
      (loop $blocks
        (br_if $done (i32.ge_u (local.get $i) (local.get $n8)))
        (local.set $t (v128.const i64x2 0 0))
        (local.set $block (i32.add (local.get $i) (i32.const 262144))) ;; 32768 steps of 8 pixels
        (if (i32.gt_u (local.get $block) (local.get $n8)) (then (local.set $block (local.get $n8))))
        (loop $steps
          (local.set $p (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1))))
          (local.set $q (i32.add (local.get $acc) (i32.shl (local.get $i) (i32.const 2))))
          (local.set $v (v128.load (local.get $p)))
          (local.set $lo (i32x4.extend_low_i16x8_u (local.get $v)))
          (local.set $hi (i32x4.extend_high_i16x8_u (local.get $v)))
          (v128.store offset=0 (local.get $q) (i32x4.add (v128.load offset=0 (local.get $q)) (local.get $lo)))
          (v128.store offset=16 (local.get $q) (i32x4.add (v128.load offset=16 (local.get $q)) (local.get $hi)))
          (local.set $t (i32x4.add (local.get $t) (i32x4.add (local.get $lo) (local.get $hi))))
          (local.set $i (i32.add (local.get $i) (i32.const 8)))
          (br_if $steps (i32.lt_u (local.get $i) (local.get $block))))
        (local.set $total (f64.add (local.get $total) (call $lanes_u32_f64 (local.get $t))))
        (br $blocks)))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $x (i32.load16_u (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))))
        (local.set $q (i32.add (local.get $acc) (i32.shl (local.get $i) (i32.const 2))))
        (i32.store (local.get $q) (i32.add (i32.load (local.get $q)) (local.get $x)))
        (local.set $total (f64.add (local.get $total) (f64.convert_i32_u (local.get $x))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $tail)))
    (local.get $total))
)
