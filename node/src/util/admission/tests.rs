use super::*;

fn limits() -> Limits {
    Limits {
        slots: 8,
        per_range: 3,
        deadline: Duration::from_secs(10),
        pressed_deadline: Duration::from_secs(2),
        loopback_sources: false,
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::from([a, b, c, d])
}

fn id_of(a: Admit) -> ConnId {
    match a {
        Admit::In { id, .. } => id,
        Admit::Refused => panic!("refused"),
    }
}

#[test]
fn full_slots_close_the_oldest_waiting_connection_not_the_new_one() {
    let t0 = Instant::now();
    let mut adm = Admission::new(limits());
    let ids: Vec<ConnId> = (0..8u8)
        .map(|i| id_of(adm.admit(t0 + Duration::from_millis(u64::from(i)), v4(10, i, 0, 1))))
        .collect();
    // The two oldest said what they want: busy, never evicted.
    adm.busy(ids[0]);
    adm.busy(ids[1]);
    let t = t0 + Duration::from_millis(100);
    assert_eq!(
        adm.admit(t, v4(10, 50, 0, 1)),
        Admit::In {
            id: 8,
            evict: Some(ids[2])
        },
        "the oldest waiting one makes room"
    );
    assert_eq!(adm.held(), 8);
    // A busy connection waiting again counts from then: it is now the
    // newest waiting one.
    adm.wait(ids[0], t + Duration::from_millis(1));
    let evicted: Vec<_> = (0..6u8)
        .map(
            |i| match adm.admit(t + Duration::from_millis(2), v4(10, 60 + i, 0, 1)) {
                Admit::In { evict, .. } => evict.unwrap(),
                Admit::Refused => panic!("refused"),
            },
        )
        .collect();
    assert_eq!(evicted, vec![ids[3], ids[4], ids[5], ids[6], ids[7], 8]);
}

#[test]
fn a_flood_from_a_few_ranges_pushes_out_its_own_before_a_lone_newcomer() {
    let t0 = Instant::now();
    let mut adm = Admission::new(limits());
    // A lone connection from its own range, the oldest of all.
    let lone = id_of(adm.admit(t0, v4(192, 0, 2, 1)));
    // A flood from three /24s fills the slots (3 + 2 + 2).
    let mut flood = Vec::new();
    for (i, c) in [1u8, 1, 1, 2, 2, 3, 3].into_iter().enumerate() {
        let at = t0 + Duration::from_millis(1 + u64::try_from(i).unwrap());
        flood.push(id_of(adm.admit(at, v4(10, 0, c, 9))));
    }
    assert_eq!(adm.held(), 8);
    // More from new ranges: each closes the oldest of the ranges holding
    // the most, never the lone one while a range holds two.
    let mut evicted = Vec::new();
    for c in 10..14u8 {
        match adm.admit(t0 + Duration::from_millis(50), v4(10, 0, c, 9)) {
            Admit::In { evict, .. } => evicted.push(evict.unwrap()),
            Admit::Refused => panic!("refused"),
        }
    }
    assert_eq!(evicted, vec![flood[0], flood[1], flood[3], flood[5]]);
    assert!(adm.conns.contains_key(&lone));
    // Every range down to one: the oldest of all goes.
    assert!(matches!(
        adm.admit(t0 + Duration::from_millis(60), v4(10, 0, 20, 9)),
        Admit::In { evict: Some(e), .. } if e == lone
    ));
}

#[test]
fn every_slot_busy_refuses_the_new_connection() {
    let t0 = Instant::now();
    let mut adm = Admission::new(limits());
    for i in 0..8u8 {
        let id = id_of(adm.admit(t0, v4(10, i, 0, 1)));
        adm.busy(id);
    }
    assert_eq!(adm.admit(t0, v4(10, 99, 0, 1)), Admit::Refused);
    assert_eq!(adm.held(), 8);
}

#[test]
fn one_range_makes_room_from_its_own_connections() {
    let t0 = Instant::now();
    let mut adm = Admission::new(limits());
    // An older connection from elsewhere.
    let other = id_of(adm.admit(t0, v4(192, 0, 2, 1)));
    // Three from 10.1.1.0/24 (several addresses), the range's share.
    let mine: Vec<ConnId> = (1..=3u8)
        .map(|i| id_of(adm.admit(t0 + Duration::from_millis(u64::from(i)), v4(10, 1, 1, i))))
        .collect();
    // The fourth from the range closes the range's oldest, not the older
    // connection from elsewhere, though slots are free.
    assert_eq!(
        adm.admit(t0 + Duration::from_millis(10), v4(10, 1, 1, 200)),
        Admit::In {
            id: 4,
            evict: Some(mine[0])
        }
    );
    // Another /24 has its own share.
    assert!(matches!(
        adm.admit(t0, v4(10, 1, 2, 1)),
        Admit::In { evict: None, .. }
    ));
    // A busy connection does not count against its range.
    adm.busy(mine[1]);
    assert!(matches!(
        adm.admit(t0, v4(10, 1, 1, 7)),
        Admit::In { evict: None, .. }
    ));
    assert!(adm.conns.contains_key(&other));
}

#[test]
fn ranges_are_v4_slash_24_v6_slash_64_and_loopback_only_with_the_knob() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(range_of(a, false), range_of(b, false));
    assert_ne!(range_of(a, false), range_of(c, false));
    assert_eq!(
        range_of(v4(10, 1, 1, 1), false),
        range_of(v4(10, 1, 1, 254), false)
    );
    assert_ne!(
        range_of(v4(10, 1, 1, 1), false),
        range_of(v4(10, 1, 2, 1), false)
    );
    // An IPv4-mapped address is its IPv4 address.
    let mapped: IpAddr = "::ffff:10.1.1.9".parse().unwrap();
    assert_eq!(range_of(mapped, false), range_of(v4(10, 1, 1, 1), false));
    // Loopback: no cap, or one range per address with the knob.
    assert_eq!(range_of(v4(127, 0, 0, 1), false), None);
    assert_ne!(
        range_of(v4(127, 0, 0, 1), true),
        range_of(v4(127, 0, 0, 2), true)
    );
    let mut adm = Admission::new(limits());
    let t0 = Instant::now();
    for _ in 0..8 {
        assert!(matches!(
            adm.admit(t0, v4(127, 0, 0, 1)),
            Admit::In { evict: None, .. }
        ));
    }
    let mut adm = Admission::new(Limits {
        loopback_sources: true,
        ..limits()
    });
    for _ in 0..3 {
        id_of(adm.admit(t0, v4(127, 0, 0, 1)));
    }
    assert!(matches!(
        adm.admit(t0, v4(127, 0, 0, 1)),
        Admit::In { evict: Some(0), .. }
    ));
    assert!(matches!(
        adm.admit(t0, v4(127, 0, 0, 2)),
        Admit::In { evict: None, .. }
    ));
}

#[test]
fn waiting_connections_get_a_short_deadline_under_pressure() {
    let t0 = Instant::now();
    let mut adm = Admission::new(limits());
    let first = id_of(adm.admit(t0, v4(10, 0, 0, 1)));
    // One connection of 8: the long deadline.
    assert_eq!(adm.next_expiry(), Some(t0 + Duration::from_secs(10)));
    assert!(adm.expire(t0 + Duration::from_secs(3)).is_empty());
    // Five of 8 (more than half): two seconds.
    let ids: Vec<ConnId> = (1..5u8)
        .map(|i| id_of(adm.admit(t0 + Duration::from_secs(1), v4(10, i, 0, 1))))
        .collect();
    assert_eq!(adm.next_expiry(), Some(t0 + Duration::from_secs(2)));
    adm.busy(ids[0]);
    let gone = adm.expire(t0 + Duration::from_secs(3));
    assert_eq!(gone, vec![first, ids[1], ids[2], ids[3]], "busy ones stay");
    assert_eq!(adm.held(), 1);
    assert_eq!(adm.next_expiry(), None);
}

#[tokio::test]
async fn a_ticket_learns_it_was_closed_and_gives_its_slot_back() {
    let gate = Gate::new(Limits {
        slots: 2,
        ..limits()
    });
    let t0 = Instant::now();
    let old = gate.enter(t0, v4(10, 0, 0, 1)).unwrap();
    let busy = gate.enter(t0, v4(10, 0, 1, 1)).unwrap();
    busy.busy();
    let new = gate.enter(t0, v4(10, 0, 2, 1)).unwrap();
    tokio::time::timeout(Duration::from_secs(1), old.closed())
        .await
        .expect("the oldest waiting ticket is closed");
    assert!(!busy.is_closed() && !new.is_closed());
    assert_eq!(gate.held(), 2);
    // Every slot busy: refused.
    new.busy();
    assert!(gate.enter(t0, v4(10, 0, 3, 1)).is_none());
    drop(old);
    assert_eq!(gate.held(), 2, "an evicted ticket's slot was already free");
    drop(new);
    assert_eq!(gate.held(), 1);
    // Past the deadline: swept.
    busy.wait(t0);
    assert_eq!(gate.sweep(t0 + Duration::from_secs(11)), None);
    assert!(busy.is_closed());
    drop(busy);
    assert!(gate.is_empty());
}
