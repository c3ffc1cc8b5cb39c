/// Padmé padding (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication
/// with PURBs", PETS 2019, Algorithm 1): with `E = ⌊log2 L⌋` and `S = ⌊log2 E⌋ + 1`, a length
/// `L` is rounded up to a multiple of `2^(E − S)`, i.e. written as a binary floating-point number
/// with an `S`-bit mantissa (besides the leading 1) it keeps only that mantissa. The number of distinct padded sizes up to `L` is
/// `O(log log L)`, so a size leaks `O(log log L)` bits. The overhead is below `2^-S` of `L` for
/// `S` kept bits: under 12.5 % from 16 bytes, 6.25 % from 256 bytes, 3.125 % from 64 KiB to 4 GiB.
public enum Padme {
    /// The Padmé size of `length` (no floor): `length` itself for lengths below 2.
    public static func paddedLength(_ length: Int) -> Int {
        precondition(length >= 0)
        guard length >= 2 else { return length }
        let e = Int.bitWidth - 1 - length.leadingZeroBitCount   // ⌊log2 L⌋ ≥ 1
        let s = Int.bitWidth - e.leadingZeroBitCount             // ⌊log2 E⌋ + 1
        let lastBits = e - s
        let mask = (1 << lastBits) - 1
        return (length + mask) & ~mask
    }

    /// True when `length` is a Padmé size (its low `E − S` bits are zero).
    public static func isPadded(_ length: Int) -> Bool { paddedLength(length) == length }
}

/// How a repository pads the objects it stores (packs and sealed objects), from its config.
public struct PaddingPolicy: Sendable, Hashable {
    public let scheme: PaddingScheme
    /// Smallest stored size with ``PaddingScheme/padme`` (0 with no padding).
    public let floor: Int

    public init(scheme: PaddingScheme, floor: Int) {
        precondition(floor >= 0)
        self.scheme = scheme
        self.floor = scheme == .none ? 0 : floor
    }

    /// The repository's policy: its config's padding scheme and floor.
    public init(parameters: RepositoryParameters) {
        self.init(scheme: parameters.padding, floor: parameters.paddingFloor)
    }

    /// No padding (format version 1 writers before the hardening).
    public static let none = PaddingPolicy(scheme: .none, floor: 0)
    /// Padmé with a 1 MiB floor: the default of new repositories.
    public static let padmeDefault = PaddingPolicy(scheme: .padme, floor: defaultFloor)
    /// The floor new repositories get: 1 MiB.
    public static let defaultFloor = 1 << 20

    /// The stored size of an object whose unpadded size is `length`:
    /// `max(floor, Padmé(length))`, or `length` with no padding.
    public func paddedLength(_ length: Int) -> Int {
        switch scheme {
        case .none: return length
        case .padme: return max(floor, Padme.paddedLength(length))
        }
    }
}
