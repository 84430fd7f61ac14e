//! NF4 (Dettmers et al., QLoRA 2023): 16 levels at quantiles of the standard normal,
//! normalised to [-1, 1], with one absmax scale per block.

/// The 16 NF4 levels, as published with bitsandbytes (`create_normal_map`).
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Index of the level nearest to `x` (already divided by the block's absmax).
pub fn nearest_level(x: f32) -> u8 {
    // Midpoints between consecutive levels decide; 15 comparisons, branch-free enough.
    let mut code = 0u8;
    for i in 0..15 {
        if x > 0.5 * (NF4_LEVELS[i] + NF4_LEVELS[i + 1]) {
            code = i as u8 + 1;
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_sorted_symmetric_enough_and_span_minus_one_to_one() {
        assert!(NF4_LEVELS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(NF4_LEVELS[0], -1.0);
        assert_eq!(NF4_LEVELS[7], 0.0);
        assert_eq!(NF4_LEVELS[15], 1.0);
    }

    #[test]
    fn nearest_level_is_the_argmin() {
        for i in 0..=2000 {
            let x = -1.0 + i as f32 / 1000.0;
            let c = nearest_level(x) as usize;
            let best = NF4_LEVELS
                .iter()
                .map(|l| (l - x).abs())
                .fold(f32::INFINITY, f32::min);
            assert!(((NF4_LEVELS[c] - x).abs() - best).abs() < 1e-7, "x = {x}");
        }
    }
}
