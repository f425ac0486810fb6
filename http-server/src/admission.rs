//! Who gets a connection slot: per-address limits, a reserve for the federation's nodes, and a
//! bounded waiting room in front of both.
//!
//! Before its TLS handshake ends nobody knows whether a client is a node of the federation or
//! an attacker, so what precedes it must not be something an attacker can keep: every accepted
//! connection waits in a room of [`Admission::new`]'s `pending` places (TLS handshake, then a
//! serving slot), and when the room is full the connection that has waited longest leaves it
//! for the newcomer. An honest handshake takes a few round trips; to keep a node out, an
//! attacker would have to open more connections than the room holds within each such round
//! trip, from more addresses than the per-address limit allows for each.
//!
//! Serving slots: anonymous connections (no node certificate, or plain HTTP) share
//! `max_connections - reserve`; a connection whose verified certificate names a node takes a
//! reserved slot first and any other after, so however many anonymous clients there are, nodes
//! still get `reserve` connections.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The client an address stands for: an IPv4 address, or an IPv6 /64 (one subscriber's
/// network: anyone holding one has 2^64 addresses to choose from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(u32),
    V6Net(u64),
}

impl AddressKey {
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(u32::from(v4)),
                None => AddressKey::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

pub(crate) struct Admission {
    max_per_address: usize,
    per_address: Mutex<HashMap<AddressKey, usize>>,
    pending_places: usize,
    pending: Mutex<Room>,
    anonymous: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
}

#[derive(Default)]
struct Room {
    next: u64,
    /// Waiting connections by arrival: the first is the one to leave when the room is full.
    waiting: BTreeMap<u64, CancellationToken>,
}

impl Admission {
    pub(crate) fn new(
        max_connections: usize,
        reserve: usize,
        max_per_address: usize,
        pending: usize,
    ) -> Arc<Admission> {
        let max = max_connections.max(1);
        let reserve = reserve.min(max - 1);
        Arc::new(Admission {
            max_per_address: max_per_address.max(1),
            per_address: Mutex::new(HashMap::new()),
            pending_places: pending.max(1),
            pending: Mutex::new(Room::default()),
            anonymous: Arc::new(Semaphore::new(max - reserve)),
            reserved: Arc::new(Semaphore::new(reserve)),
        })
    }

    /// Counts a new connection from `ip`; `None` when that address already holds its share.
    pub(crate) fn address_slot(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = AddressKey::of(ip);
        let mut counts = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max_per_address {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            admission: self.clone(),
            key: Some(key),
        })
    }

    /// A place in the waiting room, making room by sending away the longest waiting. The
    /// token fires when this connection is the one sent away.
    pub(crate) fn wait(self: &Arc<Self>) -> (PendingPlace, CancellationToken) {
        let token = CancellationToken::new();
        let mut room = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while room.waiting.len() >= self.pending_places {
            match room.waiting.pop_first() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        let id = room.next;
        room.next += 1;
        room.waiting.insert(id, token.clone());
        (
            PendingPlace {
                admission: self.clone(),
                id,
            },
            token,
        )
    }

    /// A serving slot: for a node of the federation a reserved one first, then any.
    pub(crate) async fn serving_slot(&self, node: bool) -> OwnedSemaphorePermit {
        let anonymous = self.anonymous.clone();
        if !node {
            return anonymous.acquire_owned().await.expect("never closed");
        }
        if let Ok(p) = self.reserved.clone().try_acquire_owned() {
            return p;
        }
        if let Ok(p) = anonymous.clone().try_acquire_owned() {
            return p;
        }
        tokio::select! {
            p = self.reserved.clone().acquire_owned() => p.expect("never closed"),
            p = anonymous.acquire_owned() => p.expect("never closed"),
        }
    }
}

/// A connection counted against its address until dropped or [`AddressSlot::release`]d.
pub(crate) struct AddressSlot {
    admission: Arc<Admission>,
    key: Option<AddressKey>,
}

impl AddressSlot {
    /// No longer counted: a node of the federation is not limited by its address.
    pub(crate) fn release(&mut self) {
        if let Some(key) = self.key.take() {
            let mut counts = self
                .admission
                .per_address
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    // No entry outlives its connections: the map holds open connections only.
                    counts.remove(&key);
                }
            }
        }
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// A place in the waiting room, left when dropped.
pub(crate) struct PendingPlace {
    admission: Arc<Admission>,
    id: u64,
}

impl Drop for PendingPlace {
    fn drop(&mut self) {
        let mut room = self
            .admission
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        room.waiting.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_address_is_that_address() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::of(a), AddressKey::of(b));
        assert_ne!(AddressKey::of(a), AddressKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(AddressKey::of(mapped), AddressKey::of(v4));
    }

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_it_back() {
        let adm = Admission::new(100, 10, 2, 10);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let neighbour: IpAddr = "2001:db8::2".parse().unwrap();
        let a = adm.address_slot(ip).unwrap();
        let mut b = adm.address_slot(ip).unwrap();
        assert!(adm.address_slot(neighbour).is_none(), "same /64");
        assert!(adm.address_slot("192.0.2.1".parse().unwrap()).is_some());
        b.release();
        let _c = adm.address_slot(neighbour).unwrap();
        drop((a, b));
        assert!(adm.address_slot(ip).is_some());
        drop(_c);
        assert!(adm.per_address.lock().unwrap().is_empty(), "no entry kept");
    }

    #[test]
    fn a_full_waiting_room_sends_the_longest_waiting_away() {
        let adm = Admission::new(100, 10, 100, 2);
        let (p1, t1) = adm.wait();
        let (_p2, t2) = adm.wait();
        let (_p3, t3) = adm.wait();
        assert!(t1.is_cancelled() && !t2.is_cancelled() && !t3.is_cancelled());
        drop(p1);
        let (_p4, _) = adm.wait();
        assert!(t2.is_cancelled() && !t3.is_cancelled());
    }

    #[tokio::test]
    async fn nodes_get_the_reserve_that_anonymous_clients_cannot_take() {
        let adm = Admission::new(4, 2, 100, 10);
        let _a1 = adm.serving_slot(false).await;
        let _a2 = adm.serving_slot(false).await;
        let third = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            adm.serving_slot(false),
        )
        .await;
        assert!(third.is_err(), "anonymous clients have max - reserve");
        let _n1 = adm.serving_slot(true).await;
        let _n2 = adm.serving_slot(true).await;
        drop(_a1);
        // A node may take any free slot once the reserve is used.
        let _n3 = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            adm.serving_slot(true),
        )
        .await
        .expect("a node takes an anonymous slot too");
    }
}
