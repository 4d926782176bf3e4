//! Port mapping: the node asks its home router to forward the peer port,
//! so that other nodes can dial it although it sits behind NAT (issue 18).
//!
//! One task ([`run`]), started by the peer manager when `[network]
//! port_mapping` is on and the node listens on an unspecified or private
//! IPv4 address ([`wanted`]). It asks, in this order:
//!
//! - PCP (RFC 6887), falling back to NAT-PMP (RFC 6886) when the router
//!   says it speaks only that (`crab_nat`), of the default route's
//!   gateway ([`default_gateway`], read from `/proc/net/route`);
//! - UPnP-IGD (`igd-next`): an SSDP search, then `AddPortMapping` for the
//!   same external port (another one if that is taken).
//!
//! A mapping is asked for [`PortMapSetup::lease`] (default an hour) and
//! renewed at half of what the router granted ([`renew_at`]); when a
//! renewal fails the task maps anew. At shutdown it removes the mapping
//! (bounded by [`REMOVE_TIMEOUT`]; the peer manager's `stopped` waits for
//! it). When no router answers it tries again later, backing off from
//! [`FIRST_RETRY`] to [`MAX_RETRY`] ([`Backoff`]). Every exchange has a
//! timeout.
//!
//! The state goes to a shared slot ([`Shared`]): the node's status reads
//! it (`Reachability:`, `GetNode`'s `volatile.lichen.portMapping`), and
//! the driving task once per tick, re-signing the noderef for the mapped
//! external address ([`mapped_address`]).
//!
//! Logs: one info line when no router answers ("no port-mapping router
//! found") and one when a mapping is made, renewed in vain or removed;
//! addresses and the protocols' errors only at debug.

use crate::status::{MapProtocol, PortMapping};
use crab_nat::{InternetProtocol, PortMappingOptions, PortMappingType, TimeoutConfig};
use igd_next::aio::tokio::Tokio;
use igd_next::aio::Gateway;
use igd_next::{AddPortError, PortMappingProtocol, SearchOptions};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The mapping the router granted, if any (read by the status and the
/// driving task).
pub(super) type Shared = Arc<Mutex<Option<PortMapping>>>;

/// A renewal never comes sooner than this after the grant (a router that
/// grants a few seconds is not asked every second).
const MIN_RENEW: Duration = Duration::from_secs(2);

/// The first wait after no router answered; doubled each time.
pub const FIRST_RETRY: Duration = Duration::from_secs(60);

/// The longest wait between two searches.
pub const MAX_RETRY: Duration = Duration::from_secs(30 * 60);

/// How long an SSDP search waits for a router's answer.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(3);

/// One UPnP request (HTTP to the router), or one PCP/NAT-PMP exchange
/// with its retries.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// PCP/NAT-PMP retries: 250 ms, then 500 ms, then 1 s (RFC 6886 starts
/// at 250 ms and doubles; fewer tries, as a missing router is common).
const PMP_TIMEOUTS: TimeoutConfig = TimeoutConfig {
    initial_timeout: Duration::from_millis(250),
    max_retries: 2,
    max_retry_timeout: Some(Duration::from_secs(1)),
};

/// Removing the mapping at shutdown, all of it.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the router's mapping list says the mapping is.
const DESCRIPTION: &str = "Lichen";

/// What the task needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMapSetup {
    /// Where the node listens for peers (its port is the one mapped).
    pub listen: SocketAddr,
    /// The lease asked for.
    pub lease: Duration,
}

/// Whether a node listening on `listen` may be behind a NAT router that
/// maps ports: an unspecified address (`0.0.0.0`, or `[::]`, which takes
/// IPv4 too) or a private IPv4 one (RFC 1918, or the shared range of
/// carrier-grade NAT); never loopback or a public address.
#[must_use]
pub fn wanted(listen: SocketAddr) -> bool {
    match listen.ip() {
        IpAddr::V4(ip) => ip.is_unspecified() || ip.is_private() || is_shared(ip),
        IpAddr::V6(ip) => ip.is_unspecified(),
    }
}

/// 100.64.0.0/10, carrier-grade NAT (RFC 6598).
fn is_shared(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 100 && (64..128).contains(&b)
}

/// Whether peers on the internet can reach `ip`: not private, shared,
/// loopback, link-local, unspecified, broadcast or multicast. A router
/// whose "external" address is private sits behind another NAT: its
/// mapping reaches no further than that.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || is_shared(v4)
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast())
        }
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()),
    }
}

/// The address the noderef should name while the router maps the peer
/// port: its external address and port, if that address is public.
#[must_use]
pub(super) fn mapped_address(mapped: Option<&PortMapping>) -> Option<SocketAddr> {
    mapped
        .filter(|m| is_public(m.external.ip()))
        .map(|m| m.external)
}

/// The IPv4 default route's gateway in `/proc/net/route`'s text (the one
/// with the lowest metric when there are several): the router to ask
/// for PCP and NAT-PMP.
#[must_use]
pub fn default_gateway(route: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    let mut best: Option<(u32, Ipv4Addr)> = None;
    // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
    for line in route.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dest), Some(gw), Some(flags), Some(metric), Some(mask)) = (
            f.get(1).and_then(|s| hex(s)),
            f.get(2).and_then(|s| hex(s)),
            f.get(3).and_then(|s| hex(s)),
            f.get(6).and_then(|s| s.parse::<u32>().ok()),
            f.get(7).and_then(|s| hex(s)),
        ) else {
            continue;
        };
        let default =
            dest == 0 && mask == 0 && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY;
        // The kernel prints the address as the u32 it keeps in network
        // order: its bytes in memory are the address's.
        let gw = Ipv4Addr::from(gw.to_ne_bytes());
        if default && !gw.is_unspecified() && best.is_none_or(|(m, _)| metric < m) {
            best = Some((metric, gw));
        }
    }
    best.map(|(_, gw)| gw)
}

/// When to renew a lease of `lease` granted at `granted`: at half of it,
/// never sooner than [`MIN_RENEW`] after the grant.
#[must_use]
pub fn renew_at(granted: Instant, lease: Duration) -> Instant {
    granted + (lease / 2).max(MIN_RENEW)
}

/// The waits between searches when no router answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_RETRY }
    }
}

impl Backoff {
    /// A search failed: how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_RETRY);
        wait
    }
}

/// A mapping held on the router.
enum Held {
    /// Through UPnP-IGD: renewed by asking for it again.
    Upnp {
        gateway: Box<Gateway<Tokio>>,
        /// Where the router forwards to (this node).
        local: SocketAddr,
        external: SocketAddr,
        /// Asked for (0: the router grants only permanent mappings).
        lease_secs: u32,
    },
    /// Through PCP or NAT-PMP.
    Pmp {
        mapping: crab_nat::PortMapping,
        external: SocketAddr,
    },
}

impl Held {
    fn status(&self) -> PortMapping {
        match self {
            Held::Upnp { external, .. } => PortMapping {
                protocol: MapProtocol::Upnp,
                external: *external,
            },
            Held::Pmp { mapping, external } => PortMapping {
                protocol: match mapping.mapping_type() {
                    PortMappingType::NatPmp => MapProtocol::NatPmp,
                    PortMappingType::Pcp { .. } => MapProtocol::Pcp,
                },
                external: *external,
            },
        }
    }

    /// What the router granted (for a permanent UPnP mapping, the lease
    /// asked for: it is asked again as often).
    fn lease(&self, asked: Duration) -> Duration {
        match self {
            Held::Upnp { lease_secs: 0, .. } => asked,
            Held::Upnp { lease_secs, .. } => Duration::from_secs(u64::from(*lease_secs)),
            Held::Pmp { mapping, .. } => Duration::from_secs(u64::from(mapping.lifetime())),
        }
    }

    /// Ask the router to keep the mapping for another lease.
    async fn renew(&mut self) -> Result<(), String> {
        match self {
            Held::Upnp {
                gateway,
                local,
                external,
                lease_secs,
            } => bounded(gateway.add_port(
                PortMappingProtocol::TCP,
                external.port(),
                *local,
                *lease_secs,
                DESCRIPTION,
            ))
            .await
            .map_err(|e| format!("UPnP: {e}")),
            Held::Pmp { mapping, .. } => bounded(mapping.renew())
                .await
                .map_err(|e| format!("PCP/NAT-PMP: {e}")),
        }
    }

    /// Ask the router to remove the mapping.
    async fn remove(self) -> Result<(), String> {
        let done = match self {
            Held::Upnp {
                gateway, external, ..
            } => tokio::time::timeout(
                REMOVE_TIMEOUT,
                gateway.remove_port(PortMappingProtocol::TCP, external.port()),
            )
            .await
            .map(|r| r.map_err(|e| e.to_string())),
            Held::Pmp { mapping, .. } => tokio::time::timeout(REMOVE_TIMEOUT, mapping.try_drop())
                .await
                .map(|r| r.map_err(|(e, _)| e.to_string())),
        };
        done.map_err(|_| "no answer".to_string())?
    }
}

/// `f`, bounded by [`REQUEST_TIMEOUT`] (a timeout reads as an error).
async fn bounded<T, E: std::fmt::Display>(
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer".to_string()),
    }
}

/// The address of this host on the way to `to` (no packet is sent: a
/// connected UDP socket only picks its route), or the one listened on
/// when it is not unspecified.
fn local_ip(listen: SocketAddr, to: IpAddr) -> Result<IpAddr, String> {
    if !listen.ip().is_unspecified() {
        return Ok(listen.ip());
    }
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
    s.connect((to, crab_nat::GATEWAY_PORT))
        .map_err(|e| e.to_string())?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.ip())
}

/// Map through PCP, or NAT-PMP when the router speaks only that.
async fn map_pmp(gateway: Ipv4Addr, s: &PortMapSetup, port: NonZeroU16) -> Result<Held, String> {
    let client = local_ip(s.listen, IpAddr::V4(gateway))?;
    let opts = PortMappingOptions {
        external_port: Some(port),
        lifetime_seconds: Some(u32::try_from(s.lease.as_secs()).unwrap_or(u32::MAX)),
        timeout_config: Some(PMP_TIMEOUTS),
    };
    let mapping = bounded(crab_nat::PortMapping::new(
        gateway.into(),
        client,
        InternetProtocol::Tcp,
        port,
        opts,
    ))
    .await?;
    let ip = match mapping.mapping_type() {
        PortMappingType::Pcp { external_ip, .. } => external_ip,
        PortMappingType::NatPmp => IpAddr::V4(
            bounded(crab_nat::natpmp::external_address(
                gateway.into(),
                Some(PMP_TIMEOUTS),
            ))
            .await?,
        ),
    };
    let external = SocketAddr::new(ip, mapping.external_port().get());
    Ok(Held::Pmp { mapping, external })
}

/// Find a UPnP-IGD router by SSDP and map the same port on it (another
/// one if that is taken).
async fn map_upnp(s: &PortMapSetup) -> Result<Held, String> {
    let bind = match s.listen.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let mut search = SearchOptions::default();
    search.bind_addr = SocketAddr::new(IpAddr::V4(bind), 0);
    search.timeout = Some(SEARCH_TIMEOUT);
    search.single_search_timeout = Some(SEARCH_TIMEOUT);
    let gateway = match tokio::time::timeout(
        SEARCH_TIMEOUT + Duration::from_secs(1),
        igd_next::aio::tokio::search_gateway(search),
    )
    .await
    {
        Ok(r) => r.map_err(|e| e.to_string())?,
        Err(_) => return Err("no answer".to_string()),
    };
    let local = SocketAddr::new(local_ip(s.listen, gateway.addr.ip())?, s.listen.port());
    let ip = bounded(gateway.get_external_ip()).await?;
    let mut lease_secs = u32::try_from(s.lease.as_secs()).unwrap_or(u32::MAX);
    let tcp = PortMappingProtocol::TCP;
    let mut port = s.listen.port();
    let mut added = tokio::time::timeout(
        REQUEST_TIMEOUT,
        gateway.add_port(tcp, port, local, lease_secs, DESCRIPTION),
    )
    .await
    .map_err(|_| "no answer".to_string())?;
    if matches!(added, Err(AddPortError::OnlyPermanentLeasesSupported)) {
        lease_secs = 0;
        added = tokio::time::timeout(
            REQUEST_TIMEOUT,
            gateway.add_port(tcp, port, local, 0, DESCRIPTION),
        )
        .await
        .map_err(|_| "no answer".to_string())?;
    }
    match added {
        Ok(()) => {}
        Err(AddPortError::PortInUse) => {
            port = bounded(gateway.add_any_port(tcp, local, lease_secs, DESCRIPTION)).await?;
        }
        Err(e) => return Err(e.to_string()),
    }
    Ok(Held::Upnp {
        gateway: Box::new(gateway),
        local,
        external: SocketAddr::new(ip, port),
        lease_secs,
    })
}

/// One attempt with every protocol: PCP/NAT-PMP first (one exchange with
/// the default gateway), then UPnP. The error says why each failed
/// (debug only: it may name addresses).
async fn map(s: &PortMapSetup) -> Result<Held, String> {
    let port = NonZeroU16::new(s.listen.port()).ok_or("port 0")?;
    let mut why = Vec::new();
    let route = tokio::fs::read_to_string("/proc/net/route")
        .await
        .unwrap_or_default();
    match default_gateway(&route) {
        Some(gw) => match map_pmp(gw, s, port).await {
            Ok(h) => return Ok(h),
            Err(e) => why.push(format!("PCP/NAT-PMP: {e}")),
        },
        None => why.push("PCP/NAT-PMP: no IPv4 default route".to_string()),
    }
    match map_upnp(s).await {
        Ok(h) => Ok(h),
        Err(e) => {
            why.push(format!("UPnP: {e}"));
            Err(why.join("; "))
        }
    }
}

fn publish(shared: &Shared, m: Option<PortMapping>) {
    *shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = m;
}

/// How keeping a mapping ended.
enum Ended {
    Shutdown,
    /// A renewal failed: map anew.
    Lost,
}

/// Keep `held` renewed until shutdown (then remove it) or until a
/// renewal fails.
async fn keep(
    mut held: Held,
    s: &PortMapSetup,
    shared: &Shared,
    stop: &CancellationToken,
) -> Ended {
    let mut granted = Instant::now();
    loop {
        let at = renew_at(granted, held.lease(s.lease));
        tokio::select! {
            () = stop.cancelled() => {
                publish(shared, None);
                match held.remove().await {
                    Ok(()) => tracing::info!("port mapping removed from the router"),
                    Err(e) => {
                        tracing::info!("the router did not confirm removing the port mapping (it ends with its lease)");
                        tracing::debug!(error = %e, "port mapping removal");
                    }
                }
                return Ended::Shutdown;
            }
            () = tokio::time::sleep_until(at.into()) => {}
        }
        match held.renew().await {
            Ok(()) => {
                granted = Instant::now();
                publish(shared, Some(held.status()));
                tracing::debug!(
                    lease_secs = held.lease(s.lease).as_secs(),
                    "port mapping renewed"
                );
            }
            Err(e) => {
                publish(shared, None);
                tracing::info!("the port mapping could not be renewed; mapping again");
                tracing::debug!(error = %e, "port mapping renewal");
                return Ended::Lost;
            }
        }
    }
}

/// Map the peer port and keep it mapped until `stop` (see the module
/// doc). `shared` holds the mapping while there is one.
pub(super) async fn run(s: PortMapSetup, shared: Shared, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    // "No router" is said once, until a mapping is made again.
    let mut told = false;
    loop {
        let started = Instant::now();
        let found = tokio::select! {
            () = stop.cancelled() => return,
            m = map(&s) => m,
        };
        match found {
            Ok(held) => {
                let m = held.status();
                publish(&shared, Some(m));
                tracing::info!(
                    protocol = m.protocol.field(),
                    "the router maps the peer port: the noderef names the mapped address"
                );
                tracing::debug!(
                    external = %m.external,
                    lease_secs = held.lease(s.lease).as_secs(),
                    took_ms = started.elapsed().as_millis(),
                    "port mapped"
                );
                backoff = Backoff::default();
                told = false;
                match keep(held, &s, &shared, &stop).await {
                    Ended::Shutdown => return,
                    Ended::Lost => continue,
                }
            }
            Err(why) => {
                if !told {
                    tracing::info!(
                        "no port-mapping router found (UPnP, NAT-PMP, PCP); trying again later"
                    );
                    told = true;
                }
                tracing::debug!(why = %why, "port mapping failed");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.failed()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0
wlan0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
";

    #[test]
    fn portmap_the_default_gateway_with_the_lowest_metric() {
        assert_eq!(default_gateway(ROUTE), Some(Ipv4Addr::new(10, 0, 0, 1)));
        let one = ROUTE.lines().take(3).collect::<Vec<_>>().join("\n");
        assert_eq!(default_gateway(&one), Some(Ipv4Addr::new(192, 168, 1, 1)));
    }

    #[test]
    fn portmap_no_default_route_no_gateway() {
        // Only a link route; a default route that is down; garbage.
        let text = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF
eth0\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000
eth0\tzz\t0101A8C0
";
        assert_eq!(default_gateway(text), None);
        assert_eq!(default_gateway(""), None);
    }

    #[test]
    fn portmap_renewed_at_half_the_lease() {
        let t = Instant::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(renew_at(t, hour), t + Duration::from_secs(1800));
        assert_eq!(
            renew_at(t, Duration::from_secs(120)),
            t + Duration::from_secs(60)
        );
        // A router granting almost nothing is not asked every instant.
        assert_eq!(renew_at(t, Duration::from_secs(1)), t + MIN_RENEW);
        assert_eq!(renew_at(t, Duration::ZERO), t + MIN_RENEW);
    }

    #[test]
    fn portmap_backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.failed().as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1800, 1800, 1800]);
    }

    #[test]
    fn portmap_only_behind_nat() {
        let yes = [
            "0.0.0.0:9489",
            "[::]:9489",
            "192.168.1.5:9489",
            "10.1.2.3:1",
            "100.64.0.9:9",
        ];
        let no = [
            "127.0.0.1:9489",
            "198.51.100.7:9489",
            "[2001:db8::1]:9489",
            "[::1]:9",
        ];
        for a in yes {
            assert!(wanted(a.parse().expect("address")), "{a}");
        }
        for a in no {
            assert!(!wanted(a.parse().expect("address")), "{a}");
        }
    }

    #[test]
    fn portmap_the_noderef_names_a_public_mapped_address() {
        let m = |a: &str| PortMapping {
            protocol: MapProtocol::Upnp,
            external: a.parse().expect("address"),
        };
        let public = m("11.0.0.2:9489");
        assert_eq!(mapped_address(Some(&public)), Some(public.external));
        // Double NAT: the router's "external" address is private.
        for inner in [
            "192.168.0.2:9489",
            "100.100.0.1:9489",
            "10.0.0.1:1",
            "0.0.0.0:1",
        ] {
            assert_eq!(mapped_address(Some(&m(inner))), None, "{inner}");
        }
        assert_eq!(mapped_address(None), None);
    }
}
