/// Compares two byte sequences in time that depends only on their lengths (which are public: MAC
/// tags, proofs, hashes of authenticators), never on where they first differ. The one comparison
/// every module uses for secrets and tags.
public func constantTimeEqual<A: Collection<UInt8>, B: Collection<UInt8>>(_ a: A, _ b: B) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for (x, y) in zip(a, b) { diff |= x ^ y }
    return diff == 0
}
