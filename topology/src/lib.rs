//! `docfed-topology` as a library: the broker helpers and the federation launcher behind
//! `docfed-topology up`, for harnesses (endurance tests) that start whole federations, kill and
//! restart nodes or brokers, and then check what survived.
//!
//! * [`broker`]: probe a broker URL; run a private `rabbitmq-server` (start, stop, kill -9,
//!   restart) on its own port and data directory.
//! * [`broker_policy`]: what a federation's broker lets each node do (users, permissions,
//!   queues), as RabbitMQ definitions.
//! * [`launch`]: start every node of a topology file as a `docfed-node` process, wait until all
//!   are healthy, write `federation.json`, supervise, stop.
//! * [`keys`]: a key pair per node, public keys in the topology (signed messages).
//! * [`restart`]: when to restart a node that exited on its own (backoff, giving up).
//!
//! Topology files themselves (types, parsing, validation) live in
//! [`docfed_shared::topology`], since nodes read them too.

pub mod broker;
pub mod broker_policy;
pub mod certs;
pub mod demo;
pub mod keys;
pub mod launch;
pub mod restart;
