//! Drawing the probes' images: white canvases, emoji pasted at a size and place (multiplied onto
//! the canvas, so their white ground is transparent and overlaps darken), text in the public-domain
//! 8×8 bitmap font of the `font8x8` crate (scaled by whole pixels), and ink, the mean darkness of
//! an image. Resampling is the `image` crate's (bilinear, "triangle").

use clip_data::resize::Rgb8;
use font8x8::UnicodeFonts;
use image::imageops::FilterType;

/// A white `size × size` canvas.
pub fn white(size: usize) -> Rgb8 {
    Rgb8::new(size, size, vec![255; size * size * 3])
}

fn to_image(img: &Rgb8) -> image::RgbImage {
    image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data.clone())
        .expect("an Rgb8 holds width·height·3 bytes")
}

/// `img` resampled to `w × h` (bilinear).
pub fn resized(img: &Rgb8, w: usize, h: usize) -> Rgb8 {
    let out = image::imageops::resize(
        &to_image(img),
        w.max(1) as u32,
        h.max(1) as u32,
        FilterType::Triangle,
    );
    Rgb8::new(out.width() as usize, out.height() as usize, out.into_raw())
}

/// Multiply `img` onto `canvas` with its top-left corner at (`x`, `y`); what falls outside is cut.
pub fn multiply(canvas: &mut Rgb8, img: &Rgb8, x: i64, y: i64) {
    for sy in 0..img.height {
        let cy = y + sy as i64;
        if cy < 0 || cy >= canvas.height as i64 {
            continue;
        }
        for sx in 0..img.width {
            let cx = x + sx as i64;
            if cx < 0 || cx >= canvas.width as i64 {
                continue;
            }
            let s = (sy * img.width + sx) * 3;
            let d = (cy as usize * canvas.width + cx as usize) * 3;
            for c in 0..3 {
                let v = canvas.data[d + c] as u32 * img.data[s + c] as u32;
                canvas.data[d + c] = ((v + 127) / 255) as u8;
            }
        }
    }
}

/// Paste `img` resized to a `side × side` square at (`x`, `y`).
pub fn paste(canvas: &mut Rgb8, img: &Rgb8, x: i64, y: i64, side: usize) {
    multiply(canvas, &resized(img, side, side), x, y);
}

/// The glyph of `c` (a space for characters the font lacks).
fn glyph(c: char) -> [u8; 8] {
    font8x8::BASIC_FONTS
        .get(c)
        .or_else(|| font8x8::LATIN_FONTS.get(c))
        .unwrap_or([0; 8])
}

/// Draw `text` (one line) with its top-left at (`x`, `y`), each font pixel `scale × scale`.
pub fn text(canvas: &mut Rgb8, text: &str, x: i64, y: i64, scale: usize, colour: [u8; 3]) {
    let scale = scale.max(1) as i64;
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (i as i64 * 8 + col) * scale + dx;
                        let py = y + row as i64 * scale + dy;
                        if px < 0
                            || py < 0
                            || px >= canvas.width as i64
                            || py >= canvas.height as i64
                        {
                            continue;
                        }
                        let d = (py as usize * canvas.width + px as usize) * 3;
                        canvas.data[d..d + 3].copy_from_slice(&colour);
                    }
                }
            }
        }
    }
}

/// Break `text` into lines of at most `width` characters at spaces (a longer word is cut).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let chars: Vec<char> = word.chars().collect();
        for piece in chars.chunks(width) {
            let piece: String = piece.iter().collect();
            match lines.last_mut() {
                Some(l) if l.chars().count() + 1 + piece.chars().count() <= width => {
                    l.push(' ');
                    l.push_str(&piece);
                }
                _ => lines.push(piece),
            }
        }
    }
    lines
}

/// A `size × size` white image of `words`, wrapped and centred at the largest whole-pixel scale
/// that fits, shifted by (`dx`, `dy`) pixels, in `colour`.
pub fn words(size: usize, words: &str, colour: [u8; 3], dx: i64, dy: i64) -> Rgb8 {
    let mut best = (1, wrap(words, size / 8));
    for scale in (1..=size / 8).rev() {
        let lines = wrap(words, size / (8 * scale));
        let w = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) * 8 * scale;
        if w <= size && lines.len() * 8 * scale <= size {
            best = (scale, lines);
            break;
        }
    }
    let (scale, lines) = best;
    let mut canvas = white(size);
    let h = lines.len() * 8 * scale;
    let top = (size as i64 - h as i64) / 2 + dy;
    for (i, l) in lines.iter().enumerate() {
        let w = l.chars().count() * 8 * scale;
        let left = (size as i64 - w as i64) / 2 + dx;
        text(
            &mut canvas,
            l,
            left,
            top + (i * 8 * scale) as i64,
            scale,
            colour,
        );
    }
    canvas
}

/// Mean darkness in [0, 1]: 0 for white, 1 for black.
pub fn ink(img: &Rgb8) -> f64 {
    let sum: u64 = img.data.iter().map(|&v| 255 - v as u64).sum();
    sum as f64 / (img.data.len().max(1) as f64 * 255.0)
}

/// An 8×8 digit of scikit-learn's `load_digits` (values 0–16, ink high) drawn dark on white in a
/// `size × size` image, upsampled (bilinear) to MNIST's proportions: a 20-pixel digit in a 28-pixel
/// frame.
pub fn digit(values: &[u8; 64], size: usize) -> Rgb8 {
    let gray: Vec<u8> = values
        .iter()
        .flat_map(|&v| {
            let g = 255 - (v.min(16) as u32 * 255 / 16) as u8;
            [g, g, g]
        })
        .collect();
    let inner = (size * 20 / 28).max(1);
    let mut canvas = white(size);
    let off = ((size - inner) / 2) as i64;
    multiply(
        &mut canvas,
        &resized(&Rgb8::new(8, 8, gray), inner, inner),
        off,
        off,
    );
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_draws_the_font_and_wraps_at_spaces() {
        let mut c = white(16);
        text(&mut c, "1", 0, 0, 2, [0, 0, 0]);
        // the font's '1' (rows 0C 0E 0C 0C 0C 0C 3F 00, bit 0 leftmost): its foot reaches the
        // first column, nothing reaches the last two
        assert!(ink(&c) > 0.05 && ink(&c) < 0.5, "{}", ink(&c));
        let dark = |x: usize, y: usize| c.data[(y * 16 + x) * 3] < 128;
        assert!(dark(0, 12) && dark(1, 13) && !dark(0, 10));
        assert!((0..16).all(|y| !dark(15, y) && !dark(12, y)));
        assert_eq!(wrap("waving hand sign", 8), ["waving", "hand", "sign"]);
        assert_eq!(wrap("ab cd ef", 5), ["ab cd", "ef"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        let w = words(64, "troll", [0, 0, 0], 0, 0);
        assert!(ink(&w) > 0.0);
        // centred: the left and right margins are within a font pixel of each other
        let cols: Vec<usize> = (0..64)
            .filter(|&x| (0..64).any(|y| w.data[(y * 64 + x) * 3] < 128))
            .collect();
        let (l, r) = (cols[0], 63 - cols[cols.len() - 1]);
        assert!(l.abs_diff(r) <= 8, "{l} {r}");
    }

    #[test]
    fn pasting_multiplies_and_ink_grows_with_copies() {
        let red = Rgb8::new(4, 4, [255, 0, 0].repeat(16));
        let mut c = white(32);
        paste(&mut c, &red, 2, 2, 8);
        let one = ink(&c);
        paste(&mut c, &red, 20, 20, 8);
        assert!((ink(&c) - 2.0 * one).abs() < 1e-9);
        // white is transparent: pasting white changes nothing
        let before = c.clone();
        paste(&mut c, &white(4), 0, 0, 32);
        assert_eq!(c, before);
        // cut at the border without a panic
        paste(&mut c, &red, -4, 28, 8);
    }

    #[test]
    fn a_digit_is_dark_on_white_inside_its_frame() {
        let mut v = [0u8; 64];
        for i in [27, 28, 35, 36] {
            v[i] = 16; // the middle 2×2 block
        }
        let d = digit(&v, 28);
        assert_eq!(&d.data[..3], &[255, 255, 255]);
        let centre = (14 * 28 + 14) * 3;
        assert!(d.data[centre] < 128, "{}", d.data[centre]);
        assert_eq!(digit(&[0; 64], 28), white(28));
    }
}
