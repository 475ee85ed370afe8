//! The web client (`web/`), embedded in the binary and served at `/`, so a
//! node needs no files next to it (FROM-scratch images).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Path, content type and bytes of each file of the web client.
const FILES: [(&str, &str, &[u8]); 4] = [
    ("/", "text/html; charset=utf-8", include_bytes!("../../../web/index.html")),
    ("/style.css", "text/css; charset=utf-8", include_bytes!("../../../web/style.css")),
    ("/app.js", "text/javascript; charset=utf-8", include_bytes!("../../../web/app.js")),
    ("/chat.js", "text/javascript; charset=utf-8", include_bytes!("../../../web/chat.js")),
];

/// The paths the web client is served at.
pub(crate) fn paths() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(path, _, _)| *path)
}

/// Serves the file at `path` (one of [`paths`]).
pub(crate) fn serve(path: &'static str) -> Response {
    let (_, content_type, body) = FILES.iter().find(|(p, _, _)| *p == path).expect("routed paths are in FILES");
    (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; base-uri 'none'",
            ),
        ],
        *body,
    )
        .into_response()
}
