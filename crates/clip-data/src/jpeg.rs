//! JPEG decoding through libjpeg-turbo's code (as mozjpeg, built from source by cargo): the same
//! library Pillow uses, so decoded pixels are bit-identical (ISLOW IDCT, fancy upsampling).
//! A truncated file is an error, as in Pillow; other libjpeg warnings are ignored, as in Pillow.
//! Four-component (CMYK / YCCK) files are decoded to CMYK and inverted, as Pillow reads them
//! (rawmode `CMYK;I`: it assumes the Adobe convention, which Photoshop and Pillow itself write).

use std::os::raw::c_int;

use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error};

fn message(cinfo: &mut jpeg_common_struct) -> String {
    type Format = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &mut [u8; 80]);
    // SAFETY: `err` is the manager installed below; format_message writes at most 80 bytes into
    // the buffer (the binding declares it `&[u8; 80]`, hence the cast to the writable signature).
    unsafe {
        let err = &*cinfo.err;
        let mut buf = [0u8; 80];
        if let Some(fmt) = err.format_message {
            let fmt = std::mem::transmute::<
                unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &[u8; 80]),
                Format,
            >(fmt);
            fmt(cinfo, &mut buf);
        }
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }
}

extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    // resume_unwind does not run the panic hook: nothing is printed
    std::panic::resume_unwind(Box::new(message(cinfo)));
}

extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    if level < 0 {
        let msg = message(cinfo);
        if msg.starts_with("Premature end of JPEG file") {
            std::panic::resume_unwind(Box::new(
                "the file is truncated (premature end of JPEG data)".to_owned(),
            ));
        }
    }
}

fn error_mgr() -> jpeg_error_mgr {
    // SAFETY: a zeroed manager is what jpeg_std_error expects to fill in.
    unsafe {
        let mut err: jpeg_error_mgr = std::mem::zeroed();
        jpeg_std_error(&mut err);
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        err
    }
}

/// Decoded pixels: grey (1 channel), RGB (3) or CMYK (4), with the size.
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// Decode a JPEG as Pillow opens it: grey, RGB, or CMYK (inverted, Pillow's `CMYK;I`).
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    use mozjpeg::ColorSpace::{JCS_CMYK, JCS_GRAYSCALE, JCS_YCCK};
    let result = std::panic::catch_unwind(|| -> std::io::Result<Decoded> {
        let d = mozjpeg::Decompress::with_err(error_mgr()).from_mem(bytes)?;
        let (mut s, channels) = match d.color_space() {
            JCS_GRAYSCALE => (d.grayscale()?, 1),
            JCS_CMYK | JCS_YCCK => (d.to_colorspace(JCS_CMYK)?, 4),
            _ => (d.rgb()?, 3),
        };
        let (width, height) = (s.width(), s.height());
        let mut data = s.read_scanlines::<u8>()?;
        s.finish()?;
        if channels == 4 {
            data.iter_mut().for_each(|v| *v = 255 - *v);
        }
        Ok(Decoded {
            width,
            height,
            channels,
            data,
        })
    });
    match result {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(e.to_string()),
        Err(payload) => Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "libjpeg error".into())),
    }
}
