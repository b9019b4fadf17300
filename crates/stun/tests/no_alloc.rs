//! Decoding and verifying a message, and encoding one into a slice, allocate
//! nothing: counted with a global allocator in this test binary.

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use p2p_stun::attr::{IceControlling, Priority, UseCandidate, Username, XorMappedAddress};
use p2p_stun::{
    Key, Message, MessageBuilder, MessageClass, MessageType, Method, SliceBuf, TransactionId,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn ice_check_encode_decode_verify_allocate_nothing() {
    let key = Key::short_term("VOkJxbRl1RmTxUk/WvJxBt").unwrap();
    let tid = TransactionId::new([3; 12]);
    let mut buf = [0u8; 256];
    let mut len = 0;
    let n = allocations_during(|| {
        let mut b = MessageBuilder::new(
            SliceBuf::new(&mut buf),
            MessageType::new(Method::BINDING, MessageClass::Request),
            tid,
        )
        .unwrap();
        b.add(&Username::new("evtj:h6vY").unwrap()).unwrap();
        b.add(&Priority(0x6e0001ff)).unwrap();
        b.add(&IceControlling(0x932ff9b151263b36)).unwrap();
        b.add(&UseCandidate).unwrap();
        b.add_message_integrity(&key).unwrap();
        b.add_fingerprint().unwrap();
        len = b.finish();
    });
    assert_eq!(n, 0, "encoding allocated");

    let n = allocations_during(|| {
        let m = Message::decode(&buf[..len]).unwrap();
        m.verify_fingerprint().unwrap();
        m.verify_integrity(&key).unwrap();
        assert_eq!(m.get::<Username>().unwrap().unwrap().as_str(), "evtj:h6vY");
        assert_eq!(m.get::<Priority>().unwrap(), Some(Priority(0x6e0001ff)));
        assert!(m.get::<UseCandidate>().unwrap().is_some());
        assert_eq!(m.get::<XorMappedAddress>().unwrap(), None);
    });
    assert_eq!(n, 0, "decoding and verifying allocated");
}
