//! vmctl's settings applied to guest media (`guest_media`): the image cache in the configured
//! directory, whose downloads and lock waits stop at Ctrl-C ([`crate::interrupt`]).

use guest_media::cache::ImageCache;

use crate::config::Config;

/// The image cache at the `image_cache` setting. A download stopped by Ctrl-C keeps its partial
/// file, to resume; the handler is only installed by `create`, so elsewhere this never stops.
pub fn image_cache(config: &Config) -> ImageCache {
    ImageCache::new(config.image_cache()).cancel_on(crate::interrupt::requested)
}
