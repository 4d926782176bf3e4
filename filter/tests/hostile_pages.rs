//! Hostile pages through the gateway's content filter: nothing that runs a
//! script or reaches the outside web survives.

use lichen_filter::{filter_css, filter_html, image_magic_ok};

/// Nothing in `out` that can run code or load from outside.
fn assert_safe(out: &str) {
    let l = out.to_ascii_lowercase();
    // Markup checks look outside <style> (CSS text is checked by the url
    // and import patterns).
    let mut markup = String::new();
    let mut rest = l.as_str();
    while let Some(i) = rest.find("<style>") {
        markup.push_str(&rest[..i]);
        let after = &rest[i..];
        let end = after.find("</style>").map_or(after.len(), |e| e + 8);
        rest = &after[end..];
    }
    markup.push_str(rest);
    for bad in [
        " onload",
        " onerror",
        " onclick",
        " onmouseover",
        "<img src=x",
    ] {
        assert!(!markup.contains(bad), "{bad:?} survived in:\n{out}");
    }
    for bad in [
        "<script",
        "javascript:",
        "vbscript:",
        "<iframe",
        "<object",
        "<embed",
        "<meta http-equiv",
        "<base",
        "<svg",
        "<form",
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "url(\"http",
        "url(http",
        "url(\"//",
        "@import url(\"http",
        "data:text/html",
        "srcset",
        "evil.example/",
    ] {
        assert!(!l.contains(bad), "{bad:?} survived in:\n{out}");
    }
}

#[test]
fn scripts_are_removed() {
    for page in [
        "<script>alert(1)</script>",
        "<SCRIPT SRC=http://evil.example/x.js></SCRIPT>",
        "<scr<script>ipt>alert(1)</script>",
        "<p>hi<script>alert(1)",
        "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\"></noscript>",
        "<template><script>alert(1)</script></template>",
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    ] {
        assert_safe(&filter_html(page));
    }
}

#[test]
fn event_handlers_are_removed() {
    for page in [
        "<body onload=alert(1)>x</body>",
        "<img src=a.png onerror=alert(1)>",
        "<a href=x onclick=\"alert(1)\">x</a>",
        "<div ONMOUSEOVER=alert(1)>x</div>",
        "<img src=a.png onerror = alert(1) >",
        "<img/src=a.png/onerror=alert(1)>",
    ] {
        let out = filter_html(page);
        assert_safe(&out);
    }
}

#[test]
fn javascript_urls_are_removed() {
    for page in [
        "<a href=\"javascript:alert(1)\">x</a>",
        "<a href=\"JaVaScRiPt:alert(1)\">x</a>",
        "<a href=\"java&#09;script:alert(1)\">x</a>",
        "<a href=\"&#106;avascript:alert(1)\">x</a>",
        "<a href=\" \x01javascript:alert(1)\">x</a>",
        "<a href=\"vbscript:msgbox(1)\">x</a>",
        "<a href=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">x</a>",
        "<img src=\"javascript:alert(1)\">",
    ] {
        assert_safe(&filter_html(page));
    }
}

#[test]
fn external_images_are_removed() {
    for page in [
        "<img src=\"http://evil.example/track.png\">",
        "<img src=\"https://evil.example/track.png\">",
        "<img src=\"//evil.example/track.png\">",
        "<img src=\"\\\\evil.example/track.png\">",
        "<img src=\"/\\evil.example/track.png\">",
        "<img srcset=\"http://evil.example/a.png 2x\" src=\"a.png\">",
        "<video poster=\"http://evil.example/p.png\"></video>",
        "<table background=\"http://evil.example/b.png\"><tr><td>x</td></tr></table>",
        "<input type=image src=\"http://evil.example/i.png\">",
        "<a ping=\"http://evil.example/ping\" href=\"a.html\">x</a>",
    ] {
        assert_safe(&filter_html(page));
    }
    // A relative image stays.
    let out = filter_html("<img src=\"images/a.png\" alt=\"A\">");
    assert!(out.contains("src=\"images/a.png\""), "{out}");
}

#[test]
fn external_stylesheets_are_removed() {
    for page in [
        "<link rel=stylesheet href=\"http://evil.example/s.css\">",
        "<link rel=stylesheet href=\"//evil.example/s.css\">",
        "<link rel=prefetch href=\"http://evil.example/x\">",
        "<link rel=dns-prefetch href=\"//evil.example\">",
        "<link rel=preconnect href=\"https://evil.example\">",
    ] {
        assert_safe(&filter_html(page));
    }
    let out = filter_html("<link rel=stylesheet href=\"style.css\">");
    assert!(out.contains("href=\"style.css\""), "{out}");
    // A prefetch to a local key is no stylesheet either.
    let out = filter_html("<link rel=prefetch href=\"next.html\">");
    assert!(!out.contains("prefetch"), "{out}");
}

#[test]
fn css_urls_are_removed() {
    for page in [
        "<style>body{background:url(http://evil.example/a.png)}</style>",
        "<style>body{background:url('//evil.example/a.png')}</style>",
        "<style>body{background:u\\rl(http://evil.example/a.png)}</style>",
        "<style>body{background:\\75\\72\\6c(http://evil.example/a.png)}</style>",
        "<style>@import 'http://evil.example/x.css';</style>",
        "<style>@import url(//evil.example/x.css) screen;</style>",
        "<style>@\\69mport 'http://evil.example/x.css';</style>",
        "<style>@font-face{font-family:x;src:url(http://evil.example/f.woff)}</style>",
        "<style>a{background-image:image-set('http://evil.example/a.png' 1x)}</style>",
        "<style>a{background-image:-webkit-image-set(url(http://evil.example/a.png) 1x)}</style>",
        "<style>a{background:url(/**/http://evil.example/a.png)}</style>",
        "<p style=\"background:url(http://evil.example/a.png)\">x</p>",
        "<p style=\"background:url(&quot;http://evil.example/a.png&quot;)\">x</p>",
        "<p style=\"behavior:url(http://evil.example/x.htc);width:expression(alert(1))\">x</p>",
        "<style>p{color:red}</style><style>a{background:url(http://evil.example/2)}</style>",
    ] {
        let out = filter_html(page);
        assert_safe(&out);
        assert!(!out.contains("expression("), "{out}");
    }
    // Local URLs stay.
    let out = filter_html("<style>body{background:url(bg.png) no-repeat}</style>");
    assert!(out.contains("url(\"bg.png\")"), "{out}");
}

#[test]
fn css_files_are_filtered() {
    let out = filter_css(
        "@import url(\"http://evil.example/a.css\");\n@import 'local.css';\nbody { color: #123; background: url(http://evil.example/x.png) }\n.a::after { content: \"\\3c /style\\3e <img src=x>\" }\n@font-face { src: url(//evil.example/f.woff2) format('woff2') }",
    );
    assert_safe(&out);
    assert!(out.contains("local.css"), "{out}");
    assert!(out.contains("color: #123"), "{out}");
    assert!(!out.contains('<'), "{out}");
}

#[test]
fn svg_is_removed() {
    for page in [
        "<svg onload=alert(1)><script>alert(1)</script></svg>",
        "<svg><a xlink:href=\"javascript:alert(1)\"><text>x</text></a></svg>",
        "<svg><image href=\"http://evil.example/a.png\"/></svg>",
        "<img src=\"data:image/svg+xml,<svg onload=alert(1)>\">",
    ] {
        assert_safe(&filter_html(page));
    }
    // An SVG file is not an image the gateway passes.
    assert!(!image_magic_ok(
        "image/svg+xml",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"
    ));
    assert!(!image_magic_ok("image/png", b"<svg onload=alert(1)>"));
}

#[test]
fn meta_refresh_is_removed() {
    for page in [
        "<meta http-equiv=\"refresh\" content=\"0;url=http://evil.example/\">",
        "<META HTTP-EQUIV=REFRESH CONTENT=\"0; URL=javascript:alert(1)\">",
        "<head><meta http-equiv=refresh content=\"1;http://evil.example\"></head><body>x</body>",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src *\">",
    ] {
        let out = filter_html(page);
        assert_safe(&out);
        assert!(!out.to_ascii_lowercase().contains("refresh"), "{out}");
    }
}

#[test]
fn base_tricks_are_removed() {
    for page in [
        "<base href=\"http://evil.example/\"><img src=\"a.png\">",
        "<head><base href=//evil.example/></head><a href=x>x</a>",
        "<BASE HREF=\"javascript:alert(1)//\">",
    ] {
        let out = filter_html(page);
        assert_safe(&out);
        assert!(out.contains("<body>"));
    }
}

#[test]
fn misnested_html_is_normalised() {
    for page in [
        "<p><b><i>x</b></i></p><img src=\"http://evil.example/a\"",
        "<table><tr><td><a href=\"http://evil.example/\">x</table></a>",
        "<div><p>unclosed <span>spans <img src=//evil.example/x",
        "<<script>script>alert(1)<</script>/script>",
        "<img src=\"a.png\"<img src=http://evil.example/b.png>",
        "<a href=\"x.html\"<script>alert(1)</script>",
        "</title><script>alert(1)</script>",
        "<textarea></textarea><script>alert(1)</script>",
        "<style></style><img src=x onerror=alert(1)>",
        "<select><option><style></option></select><img src=x onerror=alert(1)></style>",
    ] {
        assert_safe(&filter_html(page));
    }
    // Markup inside <style> is CSS text, not an element.
    let out = filter_html("<style><img src=http://evil.example/x></style>");
    assert!(!out.contains("<img"), "{out}");
}

#[test]
fn links_to_the_web_go_through_the_warning_page() {
    let out = filter_html("<a href=\"https://www.example.org/a?b=c\">out</a>");
    assert!(
        out.contains("href=\"/external-link?url=https%3A%2F%2Fwww%2Eexample%2Eorg%2Fa%3Fb%3Dc\""),
        "{out}"
    );
    assert!(out.contains("noreferrer"), "{out}");
    // Freenet keys and gateway links stay inside.
    let out = filter_html(
        "<a href=\"freenet:CHK@abc/x.html\">a</a><a href=\"http://127.0.0.1:8888/USK@abc/site/1/\">b</a><a href=\"/SSK@abc/s-1/\">c</a>",
    );
    assert!(out.contains("href=\"/CHK@abc/x.html\""), "{out}");
    assert!(out.contains("href=\"/USK@abc/site/1/\""), "{out}");
    assert!(out.contains("href=\"/SSK@abc/s-1/\""), "{out}");
    // Gateway-internal pages that are not keys are not reachable by link.
    let out = filter_html("<a href=\"/upload\">u</a>");
    assert!(!out.contains("/upload"), "{out}");
}

#[test]
fn page_text_and_structure_survive() {
    let out = filter_html(
        "<!DOCTYPE html><html><head><title>My &amp; site</title><link rel=stylesheet href=style.css></head>\
         <body><h1 class=big>Hello</h1><p style=\"color: red\">text <a href=\"sub/page.html\">sub</a></p>\
         <img src=\"logo.png\" alt=\"logo\" width=\"64\"></body></html>",
    );
    assert!(out.contains("<title>My &amp; site</title>"), "{out}");
    assert!(out.contains("<h1 class=\"big\">Hello</h1>"), "{out}");
    assert!(out.contains("style=\"color: red\""), "{out}");
    assert!(out.contains("href=\"sub/page.html\""), "{out}");
    assert!(out.contains("src=\"logo.png\""), "{out}");
    assert!(out.contains("href=\"style.css\""), "{out}");
}
