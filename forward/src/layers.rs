//! Which simulcast layer a subscriber gets, from what it asked for.
//!
//! Layers are indexed from 0, the lowest (LiveKit's `q`/LOW), upwards. A
//! subscriber asks by quality (`UpdateTrackSettings.quality`) or by the size of
//! its tile (`width`/`height`, what adaptive stream sends); LiveKit's server
//! picks the smallest layer that covers the tile with a tolerance of 0.9
//! (`GetQualityForDimension`, `layerSelectionTolerance`), and so do we.

/// LiveKit's tolerance: a layer at least 90 % of the tile's size covers it.
pub const LAYER_SELECTION_TOLERANCE: f32 = 0.9;

/// The size of one layer, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSize {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// The layer for a `width`x`height` tile among `layers`, lowest first. The
/// short side is compared (height, or width for a portrait track); a tile of
/// 0x0 means no preference and gets the top layer.
pub fn for_dimensions(layers: &[LayerSize], width: u32, height: u32) -> usize {
    let top = layers.len().saturating_sub(1);
    let Some(first) = layers.first() else { return 0 };
    if width == 0 && height == 0 {
        return top;
    }
    let portrait = first.width < first.height;
    let wanted = if portrait { width } else { height };
    // u32 -> f32 loses precision only past 2^24 pixels, not a tile size.
    let wanted = (wanted as f32 * LAYER_SELECTION_TOLERANCE) as u32;
    for (i, layer) in layers.iter().enumerate() {
        let size = if portrait { layer.width } else { layer.height };
        if i == top
            || (size >= wanted
                && layers.get(i + 1).is_some_and(|next| {
                    let next = if portrait { next.width } else { next.height };
                    next != size
                }))
        {
            return i;
        }
    }
    top
}

/// The layer for LiveKit's `VideoQuality` `quality` (0 LOW, 1 MEDIUM, 2 HIGH)
/// among `count` layers: the nearest one that exists.
pub fn for_quality(count: usize, quality: u8) -> usize {
    usize::from(quality).min(count.saturating_sub(1))
}

/// What a subscriber gets when the layer it wants is not arriving (the
/// publisher paused it for bandwidth, or dynacast turned it off): the highest
/// arriving layer below it, else the lowest above, else nothing. `arriving[i]`
/// says whether layer `i` arrives.
pub fn available(wanted: usize, arriving: &[bool]) -> Option<usize> {
    let arrives = |i: &usize| arriving.get(*i).copied().unwrap_or(false);
    let below = (0..=wanted).rev().find(arrives);
    below.or_else(|| (wanted..arriving.len()).find(arrives))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYERS: [LayerSize; 3] = [
        LayerSize { width: 320, height: 180 },
        LayerSize { width: 640, height: 360 },
        LayerSize { width: 1280, height: 720 },
    ];

    #[test]
    fn a_tile_gets_the_smallest_layer_that_covers_it_within_the_tolerance() {
        assert_eq!(for_dimensions(&LAYERS, 160, 90), 0);
        assert_eq!(for_dimensions(&LAYERS, 320, 180), 0);
        assert_eq!(for_dimensions(&LAYERS, 355, 200), 0, "180 >= 0.9 * 200");
        assert_eq!(for_dimensions(&LAYERS, 400, 225), 1);
        assert_eq!(for_dimensions(&LAYERS, 640, 360), 1);
        assert_eq!(for_dimensions(&LAYERS, 700, 400), 1, "360 >= 0.9 * 400");
        assert_eq!(for_dimensions(&LAYERS, 1280, 720), 2);
        assert_eq!(for_dimensions(&LAYERS, 3840, 2160), 2, "nothing bigger: the top");
        assert_eq!(for_dimensions(&LAYERS, 0, 0), 2, "no preference: the top");
        assert_eq!(for_dimensions(&[], 640, 360), 0);
    }

    #[test]
    fn portrait_tracks_compare_widths() {
        let portrait = LAYERS.map(|l| LayerSize { width: l.height, height: l.width });
        assert_eq!(for_dimensions(&portrait, 180, 320), 0);
        assert_eq!(for_dimensions(&portrait, 360, 640), 1);
    }

    #[test]
    fn two_layers_of_one_size_give_the_higher_one() {
        let same = [LAYERS[0], LAYERS[0], LAYERS[2]];
        assert_eq!(for_dimensions(&same, 320, 180), 1);
    }

    #[test]
    fn qualities_map_to_existing_layers() {
        assert_eq!((for_quality(3, 0), for_quality(3, 1), for_quality(3, 2)), (0, 1, 2));
        assert_eq!((for_quality(2, 2), for_quality(1, 2), for_quality(0, 2)), (1, 0, 0));
    }

    #[test]
    fn a_layer_that_does_not_arrive_falls_back_down_then_up() {
        assert_eq!(available(2, &[true, true, false]), Some(1));
        assert_eq!(available(2, &[true, false, false]), Some(0));
        assert_eq!(available(0, &[false, true, true]), Some(1));
        assert_eq!(available(1, &[false, false, false]), None);
        assert_eq!(available(5, &[true, true]), Some(1));
        assert_eq!(available(0, &[]), None);
    }
}
