//! A built-in generator of captioned synthetic scenes: shapes × colours × sizes × positions ×
//! counts, several caption phrasings, and a seeded set of held-out (colour, shape) combinations that
//! never appear in training, for zero-shot tests. Every sample is a pure function of (seed, index).

use crate::resize::Rgb8;
pub use crate::rng::Rng;

pub const SHAPES: [&str; 6] = ["circle", "square", "triangle", "diamond", "star", "cross"];
pub const COLOURS: [(&str, [u8; 3]); 8] = [
    ("red", [220, 30, 30]),
    ("green", [30, 170, 50]),
    ("blue", [30, 70, 220]),
    ("yellow", [235, 210, 20]),
    ("purple", [140, 40, 180]),
    ("orange", [245, 130, 20]),
    ("black", [20, 20, 20]),
    ("cyan", [20, 200, 210]),
];
const SIZES: [&str; 2] = ["small", "large"];
const POSITIONS: [&str; 5] = [
    "on the left",
    "on the right",
    "at the top",
    "at the bottom",
    "in the middle",
];
const COUNTS: [&str; 3] = ["one", "two", "three"];

/// One generated scene's attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub shape: usize,
    pub colour: usize,
    pub large: bool,
    pub position: usize,
    pub count: usize,
}

impl Scene {
    /// The class used for zero-shot evaluation: (colour, shape).
    pub fn class(&self) -> usize {
        self.colour * SHAPES.len() + self.shape
    }
}

/// Class names for zero-shot evaluation, index = `colour · 6 + shape`: "red circle", ….
pub fn class_names() -> Vec<String> {
    COLOURS
        .iter()
        .flat_map(|(c, _)| SHAPES.iter().map(move |s| format!("{c} {s}")))
        .collect()
}

/// Which part of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// only seen (colour, shape) combinations
    Train,
    /// only held-out combinations (zero-shot)
    HeldOut,
}

/// The generator.
#[derive(Debug, Clone)]
pub struct SyntheticScenes {
    pub seed: u64,
    pub size: usize,
    /// held-out class indices (sorted)
    pub held_out: Vec<usize>,
}

impl SyntheticScenes {
    /// `held_out_fraction` of the 48 (colour, shape) classes are held out, chosen by `seed`, so that
    /// every colour and every shape still appears in training.
    pub fn new(seed: u64, size: usize, held_out_fraction: f64) -> SyntheticScenes {
        let n = COLOURS.len() * SHAPES.len();
        let want = ((n as f64 * held_out_fraction).round() as usize)
            .min(n - COLOURS.len().max(SHAPES.len()));
        let mut rng = Rng::new(seed ^ 0x5EED);
        let mut held = Vec::new();
        let mut guard = 0;
        while held.len() < want && guard < 10_000 {
            guard += 1;
            let c = rng.below(n);
            if held.contains(&c) {
                continue;
            }
            // keep at least one seen combination per colour and per shape
            let (col, shp) = (c / SHAPES.len(), c % SHAPES.len());
            let col_left = (0..SHAPES.len())
                .filter(|s| !held.contains(&(col * SHAPES.len() + s)))
                .count();
            let shp_left = (0..COLOURS.len())
                .filter(|k| !held.contains(&(k * SHAPES.len() + shp)))
                .count();
            if col_left > 1 && shp_left > 1 {
                held.push(c);
            }
        }
        held.sort_unstable();
        SyntheticScenes {
            seed,
            size,
            held_out: held,
        }
    }

    /// The scene for `index` in `split`.
    pub fn scene(&self, split: Split, index: u64) -> Scene {
        let mut rng =
            Rng::new(self.seed.wrapping_mul(0x100_0000_01B3) ^ index ^ ((split as u64) << 62));
        let n = COLOURS.len() * SHAPES.len();
        let class = loop {
            // with nothing held out, the held-out split draws from every class
            let c = match (split, self.held_out.is_empty()) {
                (Split::HeldOut, false) => self.held_out[rng.below(self.held_out.len())],
                _ => rng.below(n),
            };
            if split == Split::HeldOut || !self.held_out.contains(&c) {
                break c;
            }
        };
        Scene {
            shape: class % SHAPES.len(),
            colour: class / SHAPES.len(),
            large: rng.below(2) == 1,
            position: rng.below(POSITIONS.len()),
            count: rng.below(COUNTS.len()),
        }
    }

    /// A caption of `scene`, in one of several phrasings chosen by `variant`.
    pub fn caption(&self, scene: &Scene, variant: usize) -> String {
        let (shape, colour) = (SHAPES[scene.shape], COLOURS[scene.colour].0);
        let size = SIZES[scene.large as usize];
        let pos = POSITIONS[scene.position];
        let count = COUNTS[scene.count];
        let plural = if scene.count == 0 {
            shape.to_owned()
        } else {
            format!("{shape}s")
        };
        match variant % 5 {
            0 => format!("a {size} {colour} {shape}"),
            1 => format!("{count} {colour} {plural} {pos}"),
            2 => format!("a photo of {count} {size} {colour} {plural}"),
            3 => format!("there is a {colour} {shape} {pos}"),
            _ => format!("{colour} {shape}"),
        }
    }

    /// Image and caption of sample `index` of `split`.
    pub fn sample(&self, split: Split, index: u64) -> (Rgb8, String, Scene) {
        let scene = self.scene(split, index);
        let variant = (index.wrapping_mul(0x9E37_79B9) >> 7) as usize;
        (
            self.render(&scene, index),
            self.caption(&scene, variant),
            scene,
        )
    }

    /// Draw a scene (2×2 supersampled) on a light background with a little seeded jitter.
    pub fn render(&self, scene: &Scene, index: u64) -> Rgb8 {
        let s = self.size;
        let mut rng = Rng::new(self.seed ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let bg = [
            235 - rng.below(20) as u8,
            235 - rng.below(20) as u8,
            235 - rng.below(20) as u8,
        ];
        let radius = if scene.large { 0.22 } else { 0.12 } * s as f64 * (0.9 + 0.2 * rng.unit());
        let (cx, cy) = match scene.position {
            0 => (0.27, 0.5),
            1 => (0.73, 0.5),
            2 => (0.5, 0.27),
            3 => (0.5, 0.73),
            _ => (0.5, 0.5),
        };
        let n = scene.count + 1;
        // objects spread across the axis perpendicular to their position
        let spread = radius * 2.2 / s as f64;
        let centres: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                let off = (i as f64 - (n - 1) as f64 / 2.0) * spread;
                let (x, y) = if scene.position <= 1 {
                    (cx, cy + off)
                } else {
                    (cx + off, cy)
                };
                let jx = (rng.unit() - 0.5) * 0.04;
                let jy = (rng.unit() - 0.5) * 0.04;
                ((x + jx) * s as f64, (y + jy) * s as f64)
            })
            .collect();
        let r = if n > 1 { radius * 0.8 } else { radius };
        let colour = COLOURS[scene.colour].1;
        let mut data = Vec::with_capacity(s * s * 3);
        for y in 0..s {
            for x in 0..s {
                let mut cover = 0.0;
                for (sx, sy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    let (px, py) = (x as f64 + sx, y as f64 + sy);
                    if centres
                        .iter()
                        .any(|&(ox, oy)| inside(scene.shape, (px - ox) / r, (py - oy) / r))
                    {
                        cover += 0.25;
                    }
                }
                for c in 0..3 {
                    data.push(
                        (bg[c] as f64 * (1.0 - cover) + colour[c] as f64 * cover).round() as u8,
                    );
                }
            }
        }
        Rgb8::new(s, s, data)
    }
}

/// Whether (x, y), in units of the shape's radius around its centre, is inside the shape.
fn inside(shape: usize, x: f64, y: f64) -> bool {
    match shape {
        0 => x * x + y * y <= 1.0,
        1 => x.abs() <= 0.8 && y.abs() <= 0.8,
        2 => (-1.0..=0.8).contains(&y) && x.abs() <= (y + 1.0) / 1.8 * 0.95,
        3 => x.abs() + y.abs() <= 1.0,
        4 => {
            // five-pointed star: radius varies with angle
            let a = y.atan2(x) + std::f64::consts::FRAC_PI_2;
            let k = (a * 5.0 / (2.0 * std::f64::consts::PI)).rem_euclid(1.0);
            let edge = 0.45 + 0.55 * (2.0 * (k - 0.5)).abs();
            (x * x + y * y).sqrt() <= edge
        }
        _ => (x.abs() <= 0.3 && y.abs() <= 1.0) || (y.abs() <= 0.3 && x.abs() <= 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_held_out_respected() {
        let g = SyntheticScenes::new(1, 32, 0.25);
        assert_eq!(g.held_out.len(), 12);
        let (a, ca, sa) = g.sample(Split::Train, 42);
        let (b, cb, _) = g.sample(Split::Train, 42);
        assert_eq!((a, ca.clone()), (b, cb));
        assert!(!g.held_out.contains(&sa.class()));
        for i in 0..500 {
            assert!(!g.held_out.contains(&g.scene(Split::Train, i).class()));
            assert!(g.held_out.contains(&g.scene(Split::HeldOut, i).class()));
        }
        // every colour and shape is still seen in training
        for c in 0..COLOURS.len() {
            assert!((0..SHAPES.len()).any(|s| !g.held_out.contains(&(c * SHAPES.len() + s))));
        }
        for s in 0..SHAPES.len() {
            assert!((0..COLOURS.len()).any(|c| !g.held_out.contains(&(c * SHAPES.len() + s))));
        }
        assert_eq!(class_names().len(), 48);
        assert_eq!(
            class_names()[sa.class()],
            format!("{} {}", COLOURS[sa.colour].0, SHAPES[sa.shape])
        );
    }

    #[test]
    fn shapes_are_drawn_in_their_colour() {
        let g = SyntheticScenes::new(3, 48, 0.0);
        for (shape, name) in SHAPES.iter().enumerate() {
            let scene = Scene {
                shape,
                colour: 2,
                large: true,
                position: 4,
                count: 0,
            };
            let img = g.render(&scene, 0);
            let centre = (24 * 48 + 24) * 3;
            assert_eq!(&img.data[centre..centre + 3], &COLOURS[2].1, "{name}");
        }
    }
}
