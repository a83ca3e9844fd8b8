//! Request bodies: JSON, or multipart forms with image files; base64 and data-URI images.

use super::*;

pub(crate) fn is_data_uri(t: &str) -> bool {
    let t = t.trim_start();
    // `get`: the first five bytes may end inside a character (any text can arrive here)
    t.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("data:")) && t.contains(";base64,")
}

/// Base64 (or a `data:…;base64,` URI) → bytes; `what` names the field in the error.
pub(crate) fn decode_b64(s: &str, what: &str) -> Result<Bytes, ApiError> {
    let body = match s.split_once(";base64,") {
        Some((head, rest)) if head.trim_start().starts_with("data:") => rest,
        _ => s,
    };
    let clean: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map(Bytes::from)
        .map_err(|e| ApiError::invalid(format!("{what} is not valid base64: {e}")))
}

/// A request body: JSON (whatever the content type says, as clip-retrieval's client sends it
/// without one) or a multipart form.
pub enum Body {
    Json(Bytes),
    Form(Vec<Part>),
}

/// One field of a multipart form.
pub struct Part {
    pub name: String,
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        if multipart {
            let mut mp = Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
            let mut parts = Vec::new();
            while let Some(field) = mp
                .next_field()
                .await
                .map_err(|e| ApiError::new(e.status(), e.body_text()))?
            {
                let name = field.name().unwrap_or("").to_owned();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
                parts.push(Part { name, bytes });
            }
            Ok(Body::Form(parts))
        } else {
            let b = Bytes::from_request(req, state)
                .await
                .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
            Ok(Body::Json(b))
        }
    }
}

impl Body {
    /// The JSON body as `T` (422 with serde's reason).
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        match self {
            Body::Json(b) => serde_json::from_slice(b)
                .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}"))),
            Body::Form(_) => Err(ApiError::invalid(
                "this route takes a JSON body here, not a multipart form",
            )),
        }
    }
}

impl Part {
    pub(crate) fn text(&self) -> Result<String, ApiError> {
        String::from_utf8(self.bytes.to_vec())
            .map_err(|_| ApiError::invalid(format!("form field '{}' is not UTF-8", self.name)))
    }
}

pub(crate) fn form_field(parts: &[Part], name: &str) -> Result<Option<String>, ApiError> {
    parts
        .iter()
        .find(|p| p.name == name)
        .map(Part::text)
        .transpose()
}

pub(crate) fn form_images(parts: &[Part]) -> Vec<Bytes> {
    parts
        .iter()
        .filter(|p| p.name == "image" || p.name == "images" || p.name == "file")
        .map(|p| p.bytes.clone())
        .collect()
}

pub(crate) fn form_bool(parts: &[Part], name: &str, default: bool) -> Result<bool, ApiError> {
    match form_field(parts, name)?.as_deref() {
        None => Ok(default),
        Some("true" | "1" | "on") => Ok(true),
        Some("false" | "0" | "off") => Ok(false),
        Some(v) => Err(ApiError::invalid(format!(
            "form field '{name}' must be true or false, not {v:?}"
        ))),
    }
}

/// One string or a list of strings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

pub(crate) fn yes() -> bool {
    true
}
