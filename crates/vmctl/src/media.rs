//! vmctl's settings applied to guest media (`guest_media`): the image cache in the configured
//! directory, whose downloads and lock waits stop at Ctrl-C ([`crate::interrupt`]).

use guest_media::cache::ImageCache;

use hostio::HostRoot;

use crate::config::Config;

/// The image cache at the `image_cache` setting, under `host`. A download stopped by Ctrl-C keeps its partial
/// file, to resume; the handler is only installed by `create`, so elsewhere this never stops.
pub fn image_cache(host: &HostRoot, config: &Config) -> ImageCache {
    ImageCache::new(config.image_cache(host)).cancel_on(crate::interrupt::requested)
}
