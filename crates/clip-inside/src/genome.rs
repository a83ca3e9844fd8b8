//! A procedural emoji renderer driven by 40 genes in [0, 1] (the generator CLIP-GLaSS-style
//! search explores): a body shape with colour, outline and stripes, optional eyes, eyebrows,
//! cheeks and a mouth whose curvature runs from frown to smile, a second object, and a background.
//! Because each gene has a meaning, [`describe`] reads back what a genome draws, so for a
//! geometric or facial target the genome itself says whether a search succeeded ([`satisfies`]).
//! Hand-written: it is a few implicit shapes per pixel, drawn at twice the size and downsampled.

use clip_data::resize::Rgb8;

/// Genes per genome.
pub const GENES: usize = 40;

/// One point of the generator's latent space.
pub type Genome = [f32; GENES];

pub const SHAPES: [&str; 4] = ["circle", "square", "triangle", "diamond"];

/// Colour names and their prototypes (what [`describe`] calls a body colour).
pub const COLOURS: [(&str, [f32; 3]); 9] = [
    ("red", [220.0, 40.0, 40.0]),
    ("orange", [245.0, 140.0, 30.0]),
    ("yellow", [245.0, 215.0, 40.0]),
    ("green", [60.0, 170.0, 60.0]),
    ("blue", [40.0, 90.0, 220.0]),
    ("purple", [140.0, 60.0, 190.0]),
    ("brown", [130.0, 80.0, 40.0]),
    ("black", [20.0, 20.0, 20.0]),
    ("white", [240.0, 240.0, 240.0]),
];

/// What a genome draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Desc {
    pub shape: &'static str,
    pub colour: &'static str,
    pub eyes: bool,
    /// mouth curvature in [−1, 1] (positive: a smile), 0 without a mouth
    pub mouth: f32,
    pub has_mouth: bool,
    pub second: bool,
}

fn shape_of(g: f32) -> usize {
    ((g * 4.0) as usize).min(3)
}

fn rgb(g: &[f32]) -> [f32; 3] {
    [g[0] * 255.0, g[1] * 255.0, g[2] * 255.0]
}

fn colour_name(c: [f32; 3]) -> &'static str {
    COLOURS
        .iter()
        .min_by(|a, b| {
            let d = |p: &[f32; 3]| (0..3).map(|i| (p[i] - c[i]).powi(2)).sum::<f32>();
            d(&a.1).total_cmp(&d(&b.1))
        })
        .map(|c| c.0)
        .unwrap_or("white")
}

pub fn describe(g: &[f32; GENES]) -> Desc {
    Desc {
        shape: SHAPES[shape_of(g[0])],
        colour: colour_name(rgb(&g[4..7])),
        eyes: g[8] > 0.5,
        mouth: if g[15] > 0.5 { g[16] * 2.0 - 1.0 } else { 0.0 },
        has_mouth: g[15] > 0.5,
        second: g[23] > 0.5,
    }
}

/// For a `large COLOUR SHAPE` target: whether the genome's body has that colour, and that shape
/// (whatever else it draws).
pub fn colour_and_shape(g: &Genome, target: &str) -> Option<(bool, bool)> {
    let d = describe(g);
    match target.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["large", colour, shape]
            if COLOURS.iter().any(|c| c.0 == *colour) && SHAPES.contains(shape) =>
        {
            Some((d.colour == *colour, d.shape == *shape))
        }
        _ => None,
    }
}

/// Whether a genome draws `target`, for the targets a genome can be read against: `large COLOUR
/// SHAPE` (that shape and colour, no face, no second object) and the smiling or frowning faces (a
/// round face with eyes and a clearly curved mouth). `None`: the genome cannot say.
pub fn satisfies(g: &[f32; GENES], target: &str) -> Option<bool> {
    let d = describe(g);
    let words: Vec<&str> = target.split_whitespace().collect();
    if let ["large", colour, shape] = words.as_slice()
        && COLOURS.iter().any(|c| c.0 == *colour)
        && SHAPES.contains(shape)
    {
        return Some(
            d.colour == *colour && d.shape == *shape && !d.eyes && !d.has_mouth && !d.second,
        );
    }
    let face = d.shape == "circle" && d.eyes && d.has_mouth;
    if target.ends_with("smiling face") {
        return Some(face && d.mouth > 0.2);
    }
    if target.ends_with("frowning face") {
        return Some(face && d.mouth < -0.2);
    }
    None
}

/// Inside test of shape `s` centred at (`cx`, `cy`) with half-size `r`.
fn inside(s: usize, x: f32, y: f32, cx: f32, cy: f32, r: f32) -> bool {
    let (dx, dy) = (x - cx, y - cy);
    match s {
        0 => dx * dx + dy * dy <= r * r,
        1 => dx.abs() <= r && dy.abs() <= r,
        2 => dy <= r && dy >= -r && dx.abs() <= (dy + r) * 0.5,
        _ => dx.abs() + dy.abs() <= r,
    }
}

fn blend(px: &mut [f32; 3], c: [f32; 3], a: f32) {
    for i in 0..3 {
        px[i] = px[i] * (1.0 - a) + c[i] * a;
    }
}

/// Draw genome `g` as a `size × size` image.
pub fn render(g: &[f32; GENES], size: usize) -> Rgb8 {
    let s2 = (size * 2) as f32;
    let n = size * 2;
    let bg = if g[31] > 0.5 {
        [
            (0.6 + 0.4 * g[32]) * 255.0,
            (0.6 + 0.4 * g[33]) * 255.0,
            (0.6 + 0.4 * g[34]) * 255.0,
        ]
    } else {
        [255.0; 3]
    };
    let shape = shape_of(g[0]);
    let r = (0.25 + 0.2 * g[1]) * s2;
    let (cx, cy) = (s2 * (0.4 + 0.2 * g[2]), s2 * (0.4 + 0.2 * g[3]));
    let body = rgb(&g[4..7]);
    let outline = [
        body[0] * (1.0 - 0.8 * g[7]),
        body[1] * (1.0 - 0.8 * g[7]),
        body[2] * (1.0 - 0.8 * g[7]),
    ];
    let stripes = ((g[39] * 4.0) as usize).min(3);
    let eye_dx = (0.2 + 0.3 * g[9]) * r;
    let eye_y = cy - (0.1 + 0.3 * g[11]) * r;
    let eye_r = (0.06 + 0.12 * g[10]) * r;
    let eye_c = [g[12] * 127.0, g[13] * 127.0, g[14] * 127.0];
    let brow = (g[38] - 0.5) * 1.0;
    let mouth_curv = g[16] * 2.0 - 1.0;
    let mouth_w = (0.2 + 0.4 * g[17]) * r;
    let mouth_y = cy + (0.3 + 0.2 * g[18]) * r;
    let mouth_t = (0.03 + 0.07 * g[19]) * r;
    let mouth_c = [g[20] * 150.0, g[21] * 150.0, g[22] * 150.0];
    let second_shape = shape_of(g[24]);
    let second_r = (0.08 + 0.15 * g[25]) * s2;
    let (sx, sy) = (s2 * (0.1 + 0.8 * g[26]), s2 * (0.1 + 0.8 * g[27]));
    let second_c = rgb(&g[28..31]);
    let mut big = vec![0f32; n * n * 3];
    for py in 0..n {
        for px in 0..n {
            let (x, y) = (px as f32 + 0.5, py as f32 + 0.5);
            let mut c = bg;
            if inside(shape, x, y, cx, cy, r) {
                let edge = !inside(shape, x, y, cx, cy, r * 0.94);
                c = if edge { outline } else { body };
                if stripes > 0 && !edge {
                    let band = ((y - (cy - r)) / (2.0 * r) * (2 * stripes + 1) as f32) as usize;
                    if band % 2 == 1 {
                        c = [c[0] * 0.75, c[1] * 0.75, c[2] * 0.75];
                    }
                }
                if g[35] > 0.5 {
                    for side in [-1.0, 1.0] {
                        let (hx, hy) = (cx + side * 0.5 * r, cy + 0.15 * r);
                        if (x - hx).powi(2) + (y - hy).powi(2) <= (0.12 * r).powi(2) {
                            blend(&mut c, [240.0, 110.0, 130.0], 0.3 + 0.5 * g[36]);
                        }
                    }
                }
                if g[8] > 0.5 {
                    for side in [-1.0, 1.0] {
                        let ex = cx + side * eye_dx;
                        if (x - ex).powi(2) + ((y - eye_y) * 0.8).powi(2) <= eye_r * eye_r {
                            c = eye_c;
                        }
                        if g[37] > 0.5 {
                            let by = eye_y - 2.2 * eye_r + side * brow * (x - ex);
                            if (x - ex).abs() <= 1.6 * eye_r && (y - by).abs() <= 0.35 * eye_r {
                                c = eye_c;
                            }
                        }
                    }
                }
                if g[15] > 0.5 {
                    let dx = (x - cx) / mouth_w;
                    if dx.abs() <= 1.0 {
                        let my = mouth_y + mouth_curv * 0.25 * r * (1.0 - dx * dx)
                            - mouth_curv * 0.12 * r;
                        if (y - my).abs() <= mouth_t {
                            c = mouth_c;
                        }
                    }
                }
            }
            if g[23] > 0.5 && inside(second_shape, x, y, sx, sy, second_r) {
                c = second_c;
            }
            big[(py * n + px) * 3..(py * n + px) * 3 + 3].copy_from_slice(&c);
        }
    }
    // 2 × 2 box filter down to `size`
    let mut data = vec![0u8; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            for ch in 0..3 {
                let at = |yy: usize, xx: usize| big[(yy * n + xx) * 3 + ch];
                let v = (at(2 * y, 2 * x)
                    + at(2 * y, 2 * x + 1)
                    + at(2 * y + 1, 2 * x)
                    + at(2 * y + 1, 2 * x + 1))
                    / 4.0;
                data[(y * size + x) * 3 + ch] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Rgb8::new(size, size, data)
}

/// Read a genome file: a JSON list of exactly [`GENES`] numbers in [0, 1].
pub fn read(path: &std::path::Path) -> Result<[f32; GENES], String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let v: Vec<f64> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "'{}' is not a genome: {e} (a JSON list of {GENES} numbers in [0, 1])",
            path.display()
        )
    })?;
    if v.len() != GENES {
        return Err(format!(
            "'{}' holds {} genes; a genome has {GENES}",
            path.display(),
            v.len()
        ));
    }
    let mut g = [0f32; GENES];
    for (i, (o, x)) in g.iter_mut().zip(&v).enumerate() {
        if !(0.0..=1.0).contains(x) {
            return Err(format!(
                "'{}': gene {i} is {x}, outside [0, 1]",
                path.display()
            ));
        }
        *o = *x as f32;
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(shape: f32, rgb: [f32; 3]) -> [f32; GENES] {
        let mut g = [0.0; GENES];
        g[0] = shape;
        g[1] = 0.5;
        g[2] = 0.5;
        g[3] = 0.5;
        g[4..7].copy_from_slice(&rgb);
        g
    }

    #[test]
    fn a_genome_says_what_it_draws() {
        let red_circle = plain(0.1, [0.86, 0.16, 0.16]);
        assert_eq!(satisfies(&red_circle, "large red circle"), Some(true));
        assert_eq!(satisfies(&red_circle, "large blue circle"), Some(false));
        assert_eq!(satisfies(&red_circle, "large red square"), Some(false));
        assert_eq!(satisfies(&red_circle, "a castle"), None);
        assert_eq!(
            colour_and_shape(&red_circle, "large red square"),
            Some((true, false))
        );
        assert_eq!(
            colour_and_shape(&red_circle, "large blue circle"),
            Some((false, true))
        );
        assert_eq!(colour_and_shape(&red_circle, "slightly smiling face"), None);
        let img = render(&red_circle, 32);
        let centre = (16 * 32 + 16) * 3;
        assert!(
            img.data[centre] > 200 && img.data[centre + 1] < 60,
            "{:?}",
            &img.data[centre..centre + 3]
        );
        assert_eq!(&img.data[..3], &[255, 255, 255], "white corner");
        let mut smile = plain(0.1, [0.96, 0.84, 0.16]);
        smile[8] = 1.0;
        smile[15] = 1.0;
        smile[16] = 0.9;
        assert_eq!(satisfies(&smile, "slightly smiling face"), Some(true));
        assert_eq!(satisfies(&smile, "slightly frowning face"), Some(false));
        assert_eq!(
            satisfies(&smile, "large yellow circle"),
            Some(false),
            "a face is not a plain circle"
        );
        // the face draws differently from the plain circle
        assert_ne!(
            render(&smile, 32),
            render(&plain(0.1, [0.96, 0.84, 0.16]), 32)
        );
    }

    #[test]
    fn genome_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.json");
        std::fs::write(&p, serde_json::to_string(&vec![0.5; GENES]).unwrap()).unwrap();
        assert_eq!(read(&p).unwrap(), [0.5; GENES]);
        std::fs::write(&p, "[0.5, 0.5]").unwrap();
        assert!(
            read(&p)
                .unwrap_err()
                .contains("holds 2 genes; a genome has 40")
        );
        let mut v = vec![0.5; GENES];
        v[7] = 1.5;
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        assert!(read(&p).unwrap_err().contains("gene 7 is 1.5"));
        std::fs::write(&p, "{}").unwrap();
        assert!(read(&p).unwrap_err().contains("is not a genome"));
    }
}
