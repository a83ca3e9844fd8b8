//! The routes over an index: `/search`, `/knn-service`, `/indices-list`, thumbnails and images.

use super::*;

/// `POST /search`: the indexed images nearest a text, an image, or an indexed image.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub text: Option<String>,
    /// base64 image file
    pub image: Option<String>,
    /// "more like this": the id of an indexed image
    pub id: Option<i64>,
    /// how many results (default 10)
    pub k: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    pub id: i64,
    pub path: String,
    pub score: f32,
    /// where the thumbnail is served
    pub thumbnail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub results: Vec<SearchHit>,
}

pub(crate) const MAX_K: usize = 1000;

#[utoipa::path(post, path = "/search", request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = 422, body = ErrorResponse)))]
pub async fn search(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    app.index()?;
    let (q, k) = match body {
        Body::Form(parts) => {
            let k = form_field(&parts, "k")?
                .map(|k| k.trim().parse::<usize>())
                .transpose()
                .map_err(|_| ApiError::invalid("form field 'k' is not a number"))?;
            let images = form_images(&parts);
            let q = if let Some(img) = images.into_iter().next() {
                app.embed_images(vec![img], true).await?
            } else if let Some(t) = form_field(&parts, "text")? {
                app.embed_texts(&[t], true, true).await?
            } else {
                return Err(ApiError::invalid("send an 'image' file or a 'text' field"));
            };
            (q, k)
        }
        body => {
            let r: SearchRequest = body.json()?;
            let q = match (r.text, r.image, r.id) {
                (Some(t), None, None) => app.embed_texts(&[t], true, true).await?,
                (None, Some(i), None) => {
                    app.embed_images(vec![decode_b64(&i, "image")?], true)
                        .await?
                }
                (None, None, Some(id)) => with_index(&app, move |i| i.image(id)).await?.1,
                _ => {
                    return Err(ApiError::invalid(
                        "give exactly one of \"text\", \"image\" (base64) or \"id\"",
                    ));
                }
            };
            (q, r.k)
        }
    };
    let k = k.unwrap_or(10);
    if k == 0 || k > MAX_K {
        return Err(ApiError::invalid(format!("k {k}: give 1 to {MAX_K}")));
    }
    let results = with_index(&app, move |i| i.nearest(&q, k, false))
        .await?
        .into_iter()
        .map(|h| SearchHit {
            thumbnail: format!("/thumb/{}", h.id),
            id: h.id,
            path: h.path,
            score: h.score,
        })
        .collect();
    Ok(axum::Json(SearchResponse { results }).into_response())
}

/// clip-retrieval's `POST /knn-service` request (its client sends every field; unknown ones are
/// ignored, as its back end does).
#[derive(Debug, Deserialize, ToSchema)]
pub struct KnnRequest {
    pub text: Option<String>,
    pub image: Option<String>,
    pub image_url: Option<String>,
    pub embedding_input: Option<Vec<f32>>,
    /// "image" (search the images) or "text" (search the captions)
    pub modality: Option<String>,
    pub num_images: Option<usize>,
    pub num_result_ids: Option<usize>,
    pub indice_name: Option<String>,
    pub deduplicate: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KnnResult {
    pub id: i64,
    pub similarity: f32,
    pub url: String,
    pub image_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

#[utoipa::path(post, path = "/knn-service", request_body = KnnRequest,
    responses((status = 200, body = Vec<KnnResult>), (status = 422, body = ErrorResponse)))]
pub async fn knn(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let index = app.index()?;
    let r: KnnRequest = body.json()?;
    if let Some(name) = r.indice_name.as_deref().filter(|n| *n != index.name) {
        return Err(ApiError::invalid(format!(
            "indice_name {name:?}: this server holds the index {:?} (see /indices-list)",
            index.name
        )));
    }
    let d = app.emb.dim();
    let q = match (r.text, r.image, r.image_url, r.embedding_input) {
        (Some(t), None, None, None) => app.embed_texts(&[t], true, true).await?,
        (None, Some(i), None, None) => {
            app.embed_images(vec![decode_b64(&i, "image")?], true)
                .await?
        }
        (None, None, Some(_), None) => {
            return Err(ApiError::invalid(
                "image_url: this server does not fetch URLs; send the image as base64 in \"image\"",
            ));
        }
        (None, None, None, Some(mut v)) => {
            if v.len() != d {
                return Err(ApiError::invalid(format!(
                    "embedding_input has {} values; this model's embeddings have {d}",
                    v.len()
                )));
            }
            normalize(&mut v, d);
            v
        }
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of text, image, image_url or embedding_input",
            ));
        }
    };
    let n = r.num_images.unwrap_or(40).clamp(1, MAX_K);
    let base = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or(String::new(), |h| format!("http://{h}"));
    let text_side = r.modality.as_deref() == Some("text");
    let candidates = r.num_result_ids.unwrap_or(n).max(n).min(MAX_K * 10);
    let dedup = r.deduplicate.unwrap_or(true);
    let out = with_index(&app, move |index| {
        let hits = index.nearest(&q, candidates, text_side)?;
        let mut out: Vec<KnnResult> = Vec::new();
        let mut kept: Vec<Vec<f32>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for h in hits {
            // captions: one result per image
            if !seen.insert(h.id) {
                continue;
            }
            let Ok((path, v)) = index.image(h.id) else {
                continue; // removed since the search
            };
            if dedup {
                let dup = kept.iter().any(|k| {
                    k.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>()
                        >= clip_index::dedup::DEFAULT_THRESHOLD
                });
                if dup {
                    continue;
                }
                kept.push(v);
            }
            out.push(KnnResult {
                id: h.id,
                similarity: h.score,
                url: format!("{base}/image/{}", h.id),
                image_path: path,
                caption: text_side.then(|| h.path.clone()),
            });
            if out.len() == n {
                break;
            }
        }
        Ok(out)
    })
    .await?;
    Ok(axum::Json(out).into_response())
}

pub async fn indices_list(State(app): State<Arc<App>>) -> Response {
    let names: Vec<&str> = app.index.iter().map(|i| i.name.as_str()).collect();
    axum::Json(names).into_response()
}

/// The indexed file of `id`, if it is a file (not a shard member).
pub(crate) async fn indexed_file(app: &Arc<App>, id: i64) -> Result<PathBuf, ApiError> {
    let (path, _) = with_index(app, move |i| i.image(id)).await?;
    let p = PathBuf::from(path);
    if !p.is_file() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("image {id} is not a file on this machine (a shard member, or it was moved)"),
        ));
    }
    Ok(p)
}

#[derive(Debug, Deserialize)]
pub struct ThumbQuery {
    pub(crate) size: Option<u32>,
}

/// `GET /thumb/{id}`: a JPEG at most `size` (default 256, ≤ 1024) pixels on its longer side.
pub async fn thumb(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<ThumbQuery>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no image with id {id:?}")))?;
    let p = indexed_file(&app, id).await?;
    let size = q.size.unwrap_or(256).clamp(16, 1024);
    let jpeg = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let img =
            clip_data::load_rgb(&p, clip_data::Alpha::FlattenOnWhite).map_err(|e| e.to_string())?;
        let rgb = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
            .ok_or("bad image buffer")?;
        let t = image::DynamicImage::ImageRgb8(rgb).thumbnail(size, size);
        let mut out = std::io::Cursor::new(Vec::new());
        t.write_to(&mut out, image::ImageFormat::Jpeg)
            .map_err(|e| e.to_string())?;
        Ok(out.into_inner())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"))],
        jpeg,
    )
        .into_response())
}

/// `GET /image/{id}`: the indexed file's bytes.
pub async fn image_file(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no image with id {id:?}")))?;
    let p = indexed_file(&app, id).await?;
    let ext = p
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mime = match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        _ => "application/octet-stream",
    };
    let bytes = tokio::fs::read(&p)
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(mime))],
        bytes,
    )
        .into_response())
}
