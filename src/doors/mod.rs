//! The ways a request reaches the one decision in [`crate::decision`]. Each door only turns its
//! protocol into an [`Admission`](crate::decision::Admission) and the
//! [`Decision`](crate::decision::Decision) or [`Reject`](crate::error::Reject) back into its
//! protocol's answer; none of them checks anything itself.

pub mod explain;
pub mod ext_authz;
pub mod forward_auth;
pub mod original_request;
pub mod proxy;
pub mod trusted;
