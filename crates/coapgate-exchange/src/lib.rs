//! coapgate-exchange (skeleton).
