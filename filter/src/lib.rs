#![doc = include_str!("../README.md")]
#![warn(missing_docs, unreachable_pub)]

pub mod css;
pub mod html;
pub mod image;
pub mod url;

pub use css::filter_css;
pub use html::{escape_html, filter_html};
pub use image::{image_magic_ok, is_passable_image};
pub use url::{classify_url, external_link, is_key_path, UrlKind, KEY_PREFIXES};
