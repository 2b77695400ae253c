//! vmctl's settings applied to guest media (`guest_media`): the image cache in the configured
//! directory, whose downloads and lock waits stop when the context's cancellation check says so
//! (Ctrl-C during `create`, [`crate::interrupt`]).

use guest_media::cache::ImageCache;

use crate::ctx::Ctx;

/// The image cache at the `image_cache` setting, under the context's host root. A download
/// stopped by Ctrl-C keeps its partial file, to resume.
pub fn image_cache(ctx: &Ctx) -> ImageCache {
    ImageCache::new(ctx.config.image_cache(ctx.host)).cancel_on(ctx.cancelled)
}
