#include "host-plugins/vfio/passthrough_device.hpp"

#include <gtest/gtest.h>

using namespace vmckpt;
using namespace vmckpt::vfio;

TEST(PassthroughDevice, ParsesDriverIdAndPropertiesInOrder) {
  auto d = parsePassthrough("vfio-pci,id=gpu0,host=0000:65:00.0,x-vga=on");
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->driver, "vfio-pci");
  EXPECT_EQ(d->id, "gpu0");
  EXPECT_EQ(d->prop("host"), "0000:65:00.0");
  EXPECT_EQ(describe(*d), "vfio-pci,id=gpu0,host=0000:65:00.0,x-vga=on");
  EXPECT_EQ(deviceCommandLine(*d), "vfio-pci,id=gpu0,bus=vmckpt-slot-gpu0,host=0000:65:00.0,x-vga=on");
  EXPECT_EQ(slotCommandLine(*d, 1), "pcie-root-port,id=vmckpt-slot-gpu0,chassis=65,slot=0");
  EXPECT_EQ(deviceAddArguments(*d), (Json{{"driver", "vfio-pci"},
                                          {"id", "gpu0"},
                                          {"bus", "vmckpt-slot-gpu0"},
                                          {"host", "0000:65:00.0"},
                                          {"x-vga", "on"}}));
  auto back = fromJson(toJson(*d));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, *d);
}

TEST(PassthroughDevice, RefusesWhatCouldEscapeTheOptionOrTheShellInOneLine) {
  for (const char* bad :
       {"vfio-pci", "vfio-pci,host=0000:65:00.0", "vfio-pci,id=Gpu0", "vfio-pci,id=gpu 0",
        "vfio-pci,id=gpu0,host=0000:65:00.0;reboot", "vfio-pci,id=gpu0,host=65:00", "vfio-pci,id=gpu0,bus=pcie.0",
        "vfio-pci,id=gpu0,romfile=$(x)", "vfio pci,id=gpu0", "vfio-pci,id=gpu0,host",
        "e1000e,id=n,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02", "e1000e,id=a_very_long_identifier_of_25c"}) {
    auto d = parsePassthrough(bad);
    ASSERT_FALSE(d) << bad;
    EXPECT_EQ(d.error().code(), Errc::invalidArgument);
    EXPECT_EQ(d.error().message().find('\n'), std::string::npos);
  }
}

TEST(PassthroughDevice, IdsAreUniqueWithinAVm) {
  std::vector<PassthroughDevice> two = {*parsePassthrough("edu,id=a"), *parsePassthrough("e1000e,id=a")};
  auto v = validateAll(two);
  ASSERT_FALSE(v);
  EXPECT_EQ(v.error().message(), "passthrough id 'a' is used twice");
}

TEST(PassthroughDevice, TheDeviceMapNamesAnotherHostDevice) {
  std::vector<PassthroughDevice> devs = {*parsePassthrough("vfio-pci,id=gpu0,host=0000:65:00.0"),
                                         *parsePassthrough("e1000e,id=nic1")};
  EXPECT_EQ(deviceMapKey("gpu0"), "pci_gpu0");
  auto mapped = applyDeviceMap(devs, {{"pci_gpu0", "0000:66:00.0"}, {"gpu", "none"}, {"ib", "rxe1"}});
  ASSERT_TRUE(mapped) << mapped.error().message();
  EXPECT_EQ((*mapped)[0].prop("host"), "0000:66:00.0");
  EXPECT_EQ((*mapped)[1], devs[1]);
  auto noSuch = applyDeviceMap(devs, {{"pci_gpu9", "0000:66:00.0"}});
  ASSERT_FALSE(noSuch);
  EXPECT_EQ(noSuch.error().message(),
            "device map key 'pci_gpu9' names no passthrough device of this VM (it has gpu0, nic1)");
  EXPECT_FALSE(applyDeviceMap(devs, {{"pci_nic1", "0000:66:00.0"}}));  // no host= to replace
  EXPECT_FALSE(applyDeviceMap(devs, {{"pci_gpu0", "none"}}));
}

TEST(PassthroughDevice, PciAddresses) {
  EXPECT_TRUE(isPciAddress("0000:65:00.0"));
  EXPECT_TRUE(isPciAddress("65:1f.7"));
  EXPECT_FALSE(isPciAddress("65:1f.8"));
  EXPECT_FALSE(isPciAddress("0000-65:00.0"));
  EXPECT_FALSE(isPciAddress(""));
}
