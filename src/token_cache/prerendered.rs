//! Identity headers rendered once from the token alone, packed for a long life in the cache:
//! every value in one buffer that each request slices (a reference count, not a copy), and the
//! names shared with the compiled header plan rather than held per token.

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

#[derive(Debug)]
pub struct Prerendered {
    /// The plan's header names ([`crate::headers::HeaderPlan::names`]), or a worker's own copy.
    names: Arc<[HeaderName]>,
    values: Bytes,
    cuts: Box<[Cut]>,
}

/// One header: where its value ends in `values` and which name it carries. Four bytes: a
/// rendering past 64 KiB or a plan of more than 255 headers is not packed (see `pack`).
#[derive(Debug, Clone, Copy)]
struct Cut {
    end: u16,
    name: u8,
    sensitive: bool,
}

impl Prerendered {
    /// `None` when a rendered name is not one of `names` or the values do not fit the offsets;
    /// the session then renders per request (or per user document), as if nothing could be kept.
    pub fn pack(rendered: &[(HeaderName, HeaderValue)], names: &Arc<[HeaderName]>) -> Option<Self> {
        let total = rendered.iter().map(|(_, v)| v.len()).sum();
        let mut values = BytesMut::with_capacity(total);
        let mut cuts = Vec::with_capacity(rendered.len());
        for (name, value) in rendered {
            let index = names.iter().position(|n| n == name)?;
            values.extend_from_slice(value.as_bytes());
            cuts.push(Cut {
                end: u16::try_from(values.len()).ok()?,
                name: u8::try_from(index).ok()?,
                sensitive: value.is_sensitive(),
            });
        }
        Some(Self {
            names: names.clone(),
            values: values.freeze(),
            cuts: cuts.into_boxed_slice(),
        })
    }

    pub fn len(&self) -> usize {
        self.cuts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cuts.is_empty()
    }

    /// The headers in rendering order; each value shares this buffer.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, HeaderValue)> + '_ {
        let mut start = 0;
        self.cuts.iter().map(move |cut| {
            let end = cut.end as usize;
            let bytes = self.values.slice(start..end);
            start = end;
            // Checked again (a scan of a few hundred bytes) rather than trusted unsafely: these
            // bytes were a valid `HeaderValue` when packed, so this never falls back.
            let mut value = HeaderValue::from_maybe_shared(bytes)
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            value.set_sensitive(cut.sensitive);
            (&self.names[usize::from(cut.name)], value)
        })
    }

    /// A copy sharing no reference count with `self` (see `Session::local_copy`).
    pub(super) fn local_copy(&self) -> Self {
        let names: Vec<HeaderName> = self
            .names
            .iter()
            .map(|name| HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or(name.clone()))
            .collect();
        Self {
            names: names.into(),
            values: Bytes::copy_from_slice(&self.values),
            cuts: self.cuts.clone(),
        }
    }

    /// Heap held for this token alone (the names are the plan's): the value buffer with its
    /// shared count (allocated on the first slice), and the cuts.
    pub(super) fn heap_bytes(&self) -> usize {
        self.values.len() + super::weight::BYTES_SHARED + std::mem::size_of_val(&*self.cuts)
    }

    /// The names' heap, when they are a worker's own copy.
    pub(super) fn names_heap_bytes(&self) -> usize {
        super::weight::ARC_COUNTS
            + std::mem::size_of_val(&*self.names)
            + self
                .names
                .iter()
                .map(|n| n.as_str().len() + super::weight::BYTES_SHARED)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Arc<[HeaderName]> {
        Arc::from([
            HeaderName::from_static("x-user-id"),
            HeaderName::from_static("x-claimgate-user"),
            HeaderName::from_static("x-user-email"),
        ])
    }

    #[test]
    fn headers_come_back_in_order_with_their_names_and_sensitivity() {
        let names = names();
        let mut secret = HeaderValue::from_static("eyJpZCI6ImFubiJ9");
        secret.set_sensitive(true);
        let rendered = [
            (names[1].clone(), secret),
            (names[0].clone(), HeaderValue::from_static("ann")),
            // An empty value keeps its place.
            (names[2].clone(), HeaderValue::from_static("")),
        ];
        let packed = Prerendered::pack(&rendered, &names).unwrap();
        let back: Vec<(HeaderName, HeaderValue)> =
            packed.iter().map(|(n, v)| (n.clone(), v)).collect();
        assert_eq!(back, rendered);
        assert!(back[0].1.is_sensitive() && !back[1].1.is_sensitive());
        let copy = packed.local_copy();
        let again: Vec<_> = copy.iter().map(|(n, v)| (n.clone(), v)).collect();
        assert_eq!(again, rendered);
        assert!(again[0].1.is_sensitive());
    }

    #[test]
    fn what_cannot_be_packed_is_refused_not_cut() {
        let names = names();
        let stranger = [(
            HeaderName::from_static("x-other"),
            HeaderValue::from_static("v"),
        )];
        assert!(Prerendered::pack(&stranger, &names).is_none());
        let long = HeaderValue::from_str(&"a".repeat(70_000)).unwrap();
        assert!(Prerendered::pack(&[(names[0].clone(), long)], &names).is_none());
    }
}
