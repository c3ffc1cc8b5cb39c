import Foundation
import CofferTesting

/// `count` random bytes (the conformance suite's generator).
func randomData(_ count: Int) -> Data { StorageConformance.randomData(count) }
