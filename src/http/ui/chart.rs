//! The activity chart of the web UI: the master's last hour (events
//! ingested and notifications delivered, per minute) as a small inline SVG.
//! Pure: minutes in, markup out. Self-contained: no fonts, styles or scripts
//! from elsewhere, a white background of its own so its contrast holds on
//! any page, and a `<title>` and `<desc>` that say in words what the bars
//! show, for those who cannot see them.

use std::fmt::Write as _;

use crate::activity::MinuteCount;

/// The drawing's size (the viewBox); it scales to the page's width.
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
/// The plot: left of it the y-axis labels, above it the legend, below it
/// the x-axis labels.
const LEFT: f64 = 48.0;
const RIGHT: f64 = 588.0;
const TOP: f64 = 22.0;
const BASE: f64 = 136.0;

/// Dark blue and dark orange: each at least 4.5:1 against the white
/// background, told apart by hue with any colour vision (and by width and
/// place in the minute: events wide on the left, notifications narrow on the
/// right).
const EVENTS: &str = "#1f5fa8";
const NOTIFICATIONS: &str = "#b35900";
const TEXT: &str = "#333333";
const AXIS: &str = "#767676";

/// The ids the chart's accessible name points at: one chart per page.
const TITLE_ID: &str = "activity-chart-title";
const DESC_ID: &str = "activity-chart-desc";

/// The chart of `minutes` (oldest first, as `Activity::last_hour` gives
/// them): per minute a bar of events and, beside it, one of notifications,
/// on one scale whose top is the busiest minute's count. A count above zero
/// is at least one unit tall, so a few notifications beside many events
/// still show.
pub fn activity_svg(minutes: &[MinuteCount]) -> String {
    // Saturating: `Minutes` saturates, so a sum of its counts might not fit.
    let events = minutes.iter().fold(0u64, |sum, m| sum.saturating_add(m.events));
    let notifications = minutes.iter().fold(0u64, |sum, m| sum.saturating_add(m.notifications));
    let most_events = minutes.iter().map(|m| m.events).max().unwrap_or(0);
    let most_notifications = minutes.iter().map(|m| m.notifications).max().unwrap_or(0);
    let top = most_events.max(most_notifications);

    let summary = if events == 0 && notifications == 0 {
        "no events, no notifications".to_owned()
    } else {
        format!(
            "{}, {}; at most {} and {} in one minute",
            count(events, "event", "events"),
            count(notifications, "notification", "notifications"),
            count(most_events, "event", "events"),
            count(most_notifications, "notification", "notifications"),
        )
    };

    let mut svg = String::with_capacity(8 * 1024);
    // `write!` into a String cannot fail.
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-labelledby="{TITLE_ID} {DESC_ID}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        svg,
        r#"<title id="{TITLE_ID}">Events and notifications per minute</title><desc id="{DESC_ID}">{}</desc>"#,
        escape(&format!(
            "Events and notifications per minute over the last {}: {summary}.",
            span(minutes.len())
        ))
    );
    let _ = write!(svg, r##"<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##);

    // The legend, above the plot.
    let _ = write!(
        svg,
        r#"<rect x="{LEFT}" y="5" width="9" height="9" fill="{EVENTS}"/><text x="{}" y="13" fill="{TEXT}">events</text><rect x="{}" y="5" width="9" height="9" fill="{NOTIFICATIONS}"/><text x="{}" y="13" fill="{TEXT}">notifications</text>"#,
        LEFT + 13.0,
        LEFT + 60.0,
        LEFT + 73.0,
    );

    // Axes: the scale's top (the busiest minute) and zero; the hour's ends.
    let _ = write!(
        svg,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{RIGHT}" y2="{TOP}" stroke="{AXIS}" stroke-width="0.5" stroke-dasharray="3 3"/><line x1="{LEFT}" y1="{BASE}" x2="{RIGHT}" y2="{BASE}" stroke="{AXIS}"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{BASE}" stroke="{AXIS}"/>"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end" fill="{TEXT}">{}</text><text x="{}" y="{}" text-anchor="end" fill="{TEXT}">0</text>"#,
        LEFT - 4.0,
        TOP + 4.0,
        escape(&thousands(top)),
        LEFT - 4.0,
        BASE,
    );
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{}" fill="{TEXT}">{}</text><text x="{RIGHT}" y="{}" text-anchor="end" fill="{TEXT}">now</text>"#,
        BASE + 16.0,
        escape(&format!("\u{2212}{} min", minutes.len())),
        BASE + 16.0,
    );

    // The bars, a group per colour; none at all in an empty hour, so
    // nothing divides by zero.
    if top > 0 {
        series(&mut svg, minutes, EVENTS, (0.1, 0.5), top, |m| m.events);
        series(&mut svg, minutes, NOTIFICATIONS, (0.65, 0.3), top, |m| m.notifications);
    }
    svg.push_str("</svg>");
    svg
}

/// One colour's bars, each in its minute's slot at `place` (offset and
/// width, as fractions of the slot), on a scale from 0 to `top` (above zero).
fn series(
    svg: &mut String,
    minutes: &[MinuteCount],
    fill: &str,
    place: (f64, f64),
    top: u64,
    value: impl Fn(&MinuteCount) -> u64,
) {
    let (offset, width) = place;
    let slot = (RIGHT - LEFT) / minutes.len() as f64;
    let _ = write!(svg, r#"<g fill="{fill}">"#);
    for (i, m) in minutes.iter().enumerate() {
        let value = value(m);
        if value == 0 {
            continue;
        }
        let height = ((value as f64 / top as f64) * (BASE - TOP)).max(1.0);
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{height:.1}"/>"#,
            LEFT + (i as f64 + offset) * slot,
            BASE - height,
            width * slot,
        );
    }
    svg.push_str("</g>");
}

/// How long the chart covers, in words ("hour" reads better than "60 minutes").
fn span(minutes: usize) -> String {
    match minutes {
        60 => "hour".to_owned(),
        1 => "minute".to_owned(),
        n => format!("{n} minutes"),
    }
}

/// `n` with its noun: "no events", "1 event", "1,234 events".
fn count(n: u64, one: &str, many: &str) -> String {
    match n {
        0 => format!("no {many}"),
        1 => format!("1 {one}"),
        n => format!("{} {many}", thousands(n)),
    }
}

/// `n` with a comma between each group of three digits.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Text for SVG (XML) content or attributes. The chart writes no user text,
/// but whatever goes into the markup goes through here, so a later change
/// that does cannot inject any.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_714_557_600_000;

    fn hour(counts: impl Fn(usize) -> (u64, u64)) -> Vec<MinuteCount> {
        (0..60)
            .map(|i| {
                let (events, notifications) = counts(i);
                MinuteCount {
                    minute: T + i as i64 * 60_000,
                    events,
                    notifications,
                }
            })
            .collect()
    }

    fn desc(svg: &str) -> &str {
        let start = svg.find(&format!(r#"<desc id="{DESC_ID}">"#)).unwrap();
        let rest = &svg[start..];
        &rest[rest.find('>').unwrap() + 1..rest.find("</desc>").unwrap()]
    }

    /// The bars of one colour, as (y, height), in the order drawn.
    fn bars(svg: &str, fill: &str) -> Vec<(f64, f64)> {
        let Some(start) = svg.find(&format!(r#"<g fill="{fill}">"#)) else {
            return Vec::new();
        };
        let group = &svg[start..start + svg[start..].find("</g>").unwrap()];
        let attr = |rect: &str, name: &str| -> f64 {
            let start = rect.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            rect[start..start + rect[start..].find('"').unwrap()].parse().unwrap()
        };
        group
            .split("<rect")
            .skip(1)
            .map(|rect| (attr(rect, "y"), attr(rect, "height")))
            .collect()
    }

    #[test]
    fn an_empty_hour_draws_axes_and_no_bars_without_nan() {
        for minutes in [hour(|_| (0, 0)), Vec::new()] {
            let svg = activity_svg(&minutes);
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
            assert!(bars(&svg, EVENTS).is_empty(), "{svg}");
            assert!(bars(&svg, NOTIFICATIONS).is_empty(), "{svg}");
            assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        }
        let svg = activity_svg(&hour(|_| (0, 0)));
        assert_eq!(
            desc(&svg),
            "Events and notifications per minute over the last hour: no events, no notifications."
        );
    }

    #[test]
    fn the_description_states_the_totals_and_the_busiest_minute_in_words() {
        let svg = activity_svg(&hour(|i| match i {
            10 => (80, 1),
            59 => (1_154, 0),
            _ => (0, 0),
        }));
        assert_eq!(
            desc(&svg),
            "Events and notifications per minute over the last hour: 1,234 events, 1 notification; \
             at most 1,154 events and 1 notification in one minute."
        );
        assert!(svg.contains(r#"role="img" aria-labelledby="activity-chart-title activity-chart-desc""#));
        assert!(svg.contains(r#"<title id="activity-chart-title">"#));
    }

    #[test]
    fn the_busiest_minute_reaches_the_top_and_the_axis_says_its_count() {
        let svg = activity_svg(&hour(|i| (i as u64 * 10, u64::from(i == 3))));
        let events = bars(&svg, EVENTS);
        assert_eq!(events.len(), 59, "a bar per minute with events: {svg}");
        assert_eq!(events.last(), Some(&(TOP, BASE - TOP)), "the busiest reaches the top");
        assert!(
            events.iter().all(|&(y, h)| y >= TOP && (y + h - BASE).abs() < 0.1),
            "{events:?}"
        );
        assert!(svg.contains(">590</text>"), "the scale's top is labelled: {svg}");
        assert_eq!(
            bars(&svg, NOTIFICATIONS),
            vec![(BASE - 1.0, 1.0)],
            "one notification beside 590 events is still seen"
        );
        assert!(svg.contains(">\u{2212}60 min</text>") && svg.contains(">now</text>"));
    }

    #[test]
    fn counts_too_big_to_add_up_are_drawn_without_overflow() {
        let svg = activity_svg(&hour(|i| if i < 2 { (u64::MAX, u64::MAX) } else { (0, 0) }));
        assert_eq!(bars(&svg, EVENTS), vec![(TOP, BASE - TOP); 2]);
        assert!(desc(&svg).contains("18,446,744,073,709,551,615 events"), "{svg}");
    }

    #[test]
    fn nothing_outside_the_drawing_is_referenced() {
        let svg = activity_svg(&hour(|i| (i as u64, 0)));
        for outside in [
            "href",
            "url(",
            "@import",
            "<script",
            "<style",
            "<image",
            "<foreignObject",
        ] {
            assert!(!svg.contains(outside), "{outside} in {svg}");
        }
    }

    #[test]
    fn numbers_are_grouped_by_thousands_and_text_is_escaped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(18_446_744_073_709_551_615), "18,446,744,073,709,551,615");
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
