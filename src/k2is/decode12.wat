;; K2 IS 12-bit unpacking (spec A.4) with WebAssembly SIMD: the receivers' hot path.
;;
;; Three packed bytes B0 B1 B2 hold pixels a = B0 | (B1 & 0xF) << 8 and b = B1 >> 4 | B2 << 4.
;; As little-endian u16 lanes, a is the lane (B0, B1) masked to 12 bits and b is the lane
;; (B1, B2) shifted right by 4. So 12 bytes become 8 pixels with:
;;   1. one byte swizzle that builds the lanes (B0 B1, B1 B2, B3 B4, B4 B5, ...);
;;   2. one multiply by (16, 1, 16, 1, ...): even lanes move up 4 bits, dropping a's 4 extra
;;      bits off the top of the lane;
;;   3. one logical shift right by 4 of every lane: even lanes come back as a, odd become b.
;; The swizzle indices are constants below 16, so V8 emits a bare pshufb for it (an
;; i8x16.shuffle costs four more instructions per use to rebuild its mask), and multiply +
;; shift is two instructions where shift + mask + select is four. Measured: about twice as
;; fast in cache as the shuffle/bitselect form (bench/decode.bench.ts).
;;
;; One 16-pixel K2 block row is 24 bytes, read as two overlapping 16-byte loads at +0 and +8
;; (pixels 8..15 are bytes 12..23 = bytes 4..15 of the second load). No load reaches past the
;; bytes being decoded, so buffers need no padding. Source and destination must not overlap.
;; The memory is imported: JavaScript chooses its size and grows it (decode12.ts).
;;
;; Every loop spells the kernel out: V8 in Node 20 does not inline wasm calls.
(module
  (import "env" "memory" (memory 1))

  ;; Contiguous: $n packed bytes (a multiple of 3) at $src -> $n * 2 / 3 uint16 at $dst.
  (func (export "decode") (param $src i32) (param $dst i32) (param $n i32)
    (local $end i32)
    (if (i32.lt_u (local.get $n) (i32.const 24))
      (then
        ;; shorter than one row: one triplet at a time
        (local.set $end (i32.add (local.get $src) (local.get $n)))
        (block $done
          (loop $triplets
            (br_if $done (i32.ge_u (local.get $src) (local.get $end)))
            (i32.store16 (local.get $dst) (i32.and (i32.load16_u (local.get $src)) (i32.const 0x0fff)))
            (i32.store16 offset=2 (local.get $dst) (i32.shr_u (i32.load16_u offset=1 (local.get $src)) (i32.const 4)))
            (local.set $src (i32.add (local.get $src) (i32.const 3)))
            (local.set $dst (i32.add (local.get $dst) (i32.const 4)))
            (br $triplets)))
        (return)))
    ;; whole rows, two per iteration. The loops in this file test at the bottom: with the
    ;; test at the top, V8 rebuilds the constant vectors inside the loop on every iteration.
    (local.set $end (i32.add (local.get $src) (i32.sub (local.get $n) (i32.rem_u (local.get $n) (i32.const 48)))))
    (if (i32.lt_u (local.get $src) (local.get $end))
      (then
      (loop $rows
        (v128.store (local.get $dst)
          (i16x8.shr_u (i16x8.mul (i8x16.swizzle (v128.load (local.get $src))
            (v128.const i8x16 0 1 1 2 3 4 4 5 6 7 7 8 9 10 10 11)) (v128.const i16x8 16 1 16 1 16 1 16 1)) (i32.const 4)))
        (v128.store offset=16 (local.get $dst)
          (i16x8.shr_u (i16x8.mul (i8x16.swizzle (v128.load offset=8 (local.get $src))
            (v128.const i8x16 4 5 5 6 7 8 8 9 10 11 11 12 13 14 14 15)) (v128.const i16x8 16 1 16 1 16 1 16 1)) (i32.const 4)))
        (v128.store offset=32 (local.get $dst)
          (i16x8.shr_u (i16x8.mul (i8x16.swizzle (v128.load offset=24 (local.get $src))
            (v128.const i8x16 0 1 1 2 3 4 4 5 6 7 7 8 9 10 10 11)) (v128.const i16x8 16 1 16 1 16 1 16 1)) (i32.const 4)))
        (v128.store offset=48 (local.get $dst)
          (i16x8.shr_u (i16x8.mul (i8x16.swizzle (v128.load offset=32 (local.get $src))
            (v128.const i8x16 4 5 5 6 7 8 8 9 10 11 11 12 13 14 14 15)) (v128.const i16x8 16 1 16 1 16 1 16 1)) (i32.const 4)))
        (local.set $src (i32.add (local.get $src) (i32.const 48)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 64)))
        (br_if $rows (i32.lt_u (local.get $src) (local.get $end))))))
    ;; 0..47 bytes left: one more row if 24 or more are left, then the last 24 bytes of the buffer
    ;; again if bytes are still left, ending exactly at its end (the overlap is rewritten with
    ;; the same values)
    (local.set $n (i32.rem_u (local.get $n) (i32.const 48)))
    (if (i32.ge_u (local.get $n) (i32.const 24))
      (then (call $row (local.get $src) (local.get $dst))))
    (if (local.get $n)
      (then
        (call $row
          (i32.sub (i32.add (local.get $src) (local.get $n)) (i32.const 24))
          (i32.sub (i32.add (local.get $dst) (i32.div_u (i32.shl (local.get $n) (i32.const 2)) (i32.const 3))) (i32.const 32))))))

  ;; One block row: 24 packed bytes at $s -> 16 pixels at $d. For the tails; loops inline it.
  (func $row (param $s i32) (param $d i32)
    (v128.store (local.get $d)
      (i16x8.shr_u (i16x8.mul (i8x16.swizzle (v128.load (local.get $s))
        (v128.const i8x16 0 1 1 2 3 4 4 5 6 7 7 8 9 10 10 11)) (v128.const i16x8 16 1 16 1 16 1 16 1)) (i32.const 4)))
    (v128.store offset=16 (local.get $d)
      (i16x8.shr_u (i16x8.mul (i8x16.swizzle (v128.load offset=8 (local.get $s))
        (v128.const i8x16 4 5 5 6 7 8 8 9 10 11 11 12 13 14 14 15)) (v128.const i16x8 16 1 16 1 16 1 16 1)) (i32.const 4))))

  ;; Sector rows [$row0, $row0 + $rows) of one sector frame -> $rows x 256 uint16 at $dst.
  ;; $packed holds the 32 block payloads in the camera's send order, $stride bytes apart
  ;; (22 320 for bare payloads, 22 360 for whole datagrams with $packed past the first
  ;; header). Block (half h, column c) has send index 15 - c + 16 h; rows 0..929 are half 0.
  ;; Each tile row is written front to back from 16 blocks, two block columns per iteration:
  ;; about 3x faster in cache than walking one block column at a time, which writes the tile
  ;; in 32-byte pieces 512 bytes apart.
  (func (export "decodeSectorRows") (param $packed i32) (param $dst i32) (param $row0 i32) (param $rows i32) (param $stride i32)
    (local $r i32) (local $rEnd i32) (local $s i32) (local $sEnd i32) (local $s2 i32)
    (local.set $rEnd (i32.add (local.get $row0) (local.get $rows)))
    (local.set $r (local.get $row0))
    (if (i32.lt_u (local.get $r) (local.get $rEnd))
      (then
      (loop $tileRows
        ;; column 0 is block 15 (31 in the bottom half); each next column is $stride earlier
        (local.set $s
          (i32.add (local.get $packed)
            (i32.add
              (i32.mul (local.get $stride) (select (i32.const 15) (i32.const 31) (i32.lt_u (local.get $r) (i32.const 930))))
              (i32.mul (i32.const 24)
                (select (local.get $r) (i32.sub (local.get $r) (i32.const 930)) (i32.lt_u (local.get $r) (i32.const 930)))))))
        (local.set $sEnd (i32.sub (local.get $s) (i32.shl (local.get $stride) (i32.const 4))))
        (loop $blockColumns
          (local.set $s2 (i32.sub (local.get $s) (local.get $stride)))
          (v128.store (local.get $dst)
            (i16x8.shr_u (i16x8.mul (i8x16.swizzle (v128.load (local.get $s))
              (v128.const i8x16 0 1 1 2 3 4 4 5 6 7 7 8 9 10 10 11)) (v128.const i16x8 16 1 16 1 16 1 16 1)) (i32.const 4)))
          (v128.store offset=16 (local.get $dst)
            (i16x8.shr_u (i16x8.mul (i8x16.swizzle (v128.load offset=8 (local.get $s))
              (v128.const i8x16 4 5 5 6 7 8 8 9 10 11 11 12 13 14 14 15)) (v128.const i16x8 16 1 16 1 16 1 16 1)) (i32.const 4)))
          (v128.store offset=32 (local.get $dst)
            (i16x8.shr_u (i16x8.mul (i8x16.swizzle (v128.load (local.get $s2))
              (v128.const i8x16 0 1 1 2 3 4 4 5 6 7 7 8 9 10 10 11)) (v128.const i16x8 16 1 16 1 16 1 16 1)) (i32.const 4)))
          (v128.store offset=48 (local.get $dst)
            (i16x8.shr_u (i16x8.mul (i8x16.swizzle (v128.load offset=8 (local.get $s2))
              (v128.const i8x16 4 5 5 6 7 8 8 9 10 11 11 12 13 14 14 15)) (v128.const i16x8 16 1 16 1 16 1 16 1)) (i32.const 4)))
          (local.set $s (i32.sub (local.get $s2) (local.get $stride)))
          (local.set $dst (i32.add (local.get $dst) (i32.const 64)))
          (br_if $blockColumns (i32.ne (local.get $s) (local.get $sEnd))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br_if $tileRows (i32.lt_u (local.get $r) (local.get $rEnd)))))))
)
