//! The node proxy's per-request metrics (`direction="outbound"`): the same
//! [`ferry_gateway::requests`] the gateway records its inbound requests with.

pub(crate) use ferry_gateway::requests::{Outcome, RequestMetrics};
