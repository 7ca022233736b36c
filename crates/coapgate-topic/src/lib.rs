//! coapgate-topic (skeleton).
