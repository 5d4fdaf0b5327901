//! The load balancer.
