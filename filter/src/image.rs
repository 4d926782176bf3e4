//! Images: passed only when their first bytes match the claimed type.

/// Image types passed after a magic-number check.
#[must_use]
pub fn image_magic_ok(mime: &str, head: &[u8]) -> bool {
    match mime {
        "image/png" => head.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" | "image/jpg" | "image/pjpeg" => head.starts_with(&[0xff, 0xd8, 0xff]),
        "image/gif" => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
        "image/webp" => head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP",
        "image/x-icon" | "image/vnd.microsoft.icon" => head.starts_with(&[0, 0, 1, 0]),
        _ => false,
    }
}

/// Whether the gateway can pass this image type at all (after the magic
/// check).
#[must_use]
pub fn is_passable_image(mime: &str) -> bool {
    matches!(
        mime,
        "image/png"
            | "image/jpeg"
            | "image/jpg"
            | "image/pjpeg"
            | "image/gif"
            | "image/webp"
            | "image/x-icon"
            | "image/vnd.microsoft.icon"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic() {
        assert!(image_magic_ok("image/png", b"\x89PNG\r\n\x1a\n...."));
        assert!(!image_magic_ok("image/png", b"<svg onload=alert(1)>"));
        assert!(image_magic_ok("image/gif", b"GIF89a..."));
        assert!(!image_magic_ok("image/svg+xml", b"<svg"));
    }
}
