//! webrtc-rs 0.17 (the async `webrtc` crate): two `RTCPeerConnection`s in
//! one tokio runtime (two worker threads), loopback host candidates only,
//! mDNS off, full gathering before the offer and the answer are swapped in
//! memory. The sender keeps at most `BUFFERED` bytes buffered (waiting for
//! `on_buffered_amount_low` at half of it); the receiver counts in
//! `on_message`.
//!
//! Two settings: [`run_big_buffer`] gives each peer one UDP socket (ICE UDP
//! mux) with a 4 MiB receive buffer, [`run_default`] lets webrtc-rs bind
//! its own sockets with the OS default buffers (as a user gets it).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_mux::{UDPMuxDefault, UDPMuxParams};
use webrtc::ice::udp_network::UDPNetwork;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::RTCPeerConnection;

use crate::{message, udp, Counter, Job, Outcome, BUFFERED};

pub(crate) fn run_big_buffer(job: Job) -> Result<Outcome, String> {
    run(job, true)
}

pub(crate) fn run_default(job: Job) -> Result<Outcome, String> {
    run(job, false)
}

fn run(job: Job, big: bool) -> Result<Outcome, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let out = rt.block_on(async move {
        match tokio::time::timeout(job.limit + Duration::from_secs(20), transfer(job, big)).await {
            Ok(r) => r,
            Err(_) => Err("no result in time".into()),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    out
}

async fn peer(big: bool) -> Result<Arc<RTCPeerConnection>, String> {
    let mut s = SettingEngine::default();
    s.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    s.set_include_loopback_candidate(true);
    s.set_ip_filter(Box::new(|ip: IpAddr| ip.is_loopback()));
    s.set_network_types(vec![NetworkType::Udp4]);
    if big {
        let sock = udp::socket()?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let sock = tokio::net::UdpSocket::from_std(sock).map_err(|e| e.to_string())?;
        s.set_udp_network(UDPNetwork::Muxed(UDPMuxDefault::new(UDPMuxParams::new(
            sock,
        ))));
    }
    let api = APIBuilder::new().with_setting_engine(s).build();
    let pc = api
        .new_peer_connection(RTCConfiguration::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(pc))
}

/// Full gathering, then the description.
async fn describe(pc: &RTCPeerConnection, offer: bool) -> Result<(), String> {
    let sdp = if offer {
        pc.create_offer(None).await
    } else {
        pc.create_answer(None).await
    }
    .map_err(|e| e.to_string())?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(sdp)
        .await
        .map_err(|e| e.to_string())?;
    let _ = gathered.recv().await;
    Ok(())
}

struct Received {
    counter: Counter,
    end: Option<Instant>,
    done: Option<oneshot::Sender<()>>,
}

async fn transfer(job: Job, big: bool) -> Result<Outcome, String> {
    let (a, b) = (peer(big).await?, peer(big).await?);
    let n = job.messages();
    let received = Arc::new(Mutex::new(Received {
        counter: Counter::default(),
        end: None,
        done: None,
    }));
    let (done_tx, done_rx) = oneshot::channel();
    received.lock().map_err(|e| e.to_string())?.done = Some(done_tx);
    {
        let received = received.clone();
        b.on_data_channel(Box::new(move |dc: Arc<RTCDataChannel>| {
            let received = received.clone();
            dc.on_message(Box::new(move |m| {
                if let Ok(mut r) = received.lock() {
                    r.counter.take(&m.data);
                    if r.counter.next == n || r.counter.bad > 0 {
                        r.end = Some(Instant::now());
                        if let Some(d) = r.done.take() {
                            let _ = d.send(());
                        }
                    }
                }
                Box::pin(async {})
            }));
            Box::pin(async {})
        }));
    }
    let dc = a
        .create_data_channel("bench", None)
        .await
        .map_err(|e| e.to_string())?;
    let (open_tx, open_rx) = oneshot::channel();
    let mut open_tx = Some(open_tx);
    dc.on_open(Box::new(move || {
        if let Some(t) = open_tx.take() {
            let _ = t.send(());
        }
        Box::pin(async {})
    }));
    let low = Arc::new(Notify::new());
    dc.set_buffered_amount_low_threshold(BUFFERED / 2).await;
    {
        let low = low.clone();
        dc.on_buffered_amount_low(Box::new(move || {
            low.notify_one();
            Box::pin(async {})
        }))
        .await;
    }

    describe(&a, true).await?;
    let offer = a.local_description().await.ok_or("no offer")?;
    b.set_remote_description(offer)
        .await
        .map_err(|e| e.to_string())?;
    describe(&b, false).await?;
    let answer = b.local_description().await.ok_or("no answer")?;
    a.set_remote_description(answer)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(20), open_rx)
        .await
        .map_err(|_| "the channel did not open within 20 s")?
        .map_err(|_| "the channel did not open")?;

    let start = Instant::now();
    let sender = {
        let dc = dc.clone();
        tokio::spawn(async move {
            let mut template = message(0);
            for i in 0..n {
                while dc.buffered_amount().await > BUFFERED {
                    let _ = tokio::time::timeout(Duration::from_millis(50), low.notified()).await;
                }
                template[..8].copy_from_slice(&i.to_be_bytes());
                if dc.send(&Bytes::copy_from_slice(&template)).await.is_err() {
                    break;
                }
            }
        })
    };
    let _ = tokio::time::timeout(job.limit, done_rx).await;
    sender.abort();
    let (delivered, bad, end) = {
        let r = received.lock().map_err(|e| e.to_string())?;
        (r.counter.next, r.counter.bad, r.end)
    };
    let elapsed = end.unwrap_or_else(Instant::now) - start;
    let _ = a.close().await;
    let _ = b.close().await;
    if bad > 0 {
        return Err(format!("{bad} messages out of order or damaged"));
    }
    Ok(Outcome {
        bytes: delivered * crate::MESSAGE as u64,
        elapsed,
        complete: delivered == n,
    })
}
